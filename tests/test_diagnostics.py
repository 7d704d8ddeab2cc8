"""The measures behind the Fig. 4 chapter's verdicts and the diagnostics' interval tables, on known counts and codes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmg_lib.presets import preset
from cmg_lib.experiments import claims, diagnostics
from cmg_lib.experiments.tables import STANDARD_DEVIATION, results_table, side_by_side


def test_shared_category_fractions_per_method_and_seed():
    # video / audio uses per code: video-only, audio-only, shared (50/50), shared (30/70), unused
    mixed = {"all": {"video": np.array([9, 0, 5, 3, 0]), "audio": np.array([0, 9, 5, 7, 0])}, 0: {}}
    apart = {"all": {"video": np.array([9, 0, 0, 1]), "audio": np.array([0, 9, 0, 0])}}
    usage = {("unicode", 0): mixed, ("unicode", 1): apart, ("baseline", 0): apart}
    shares = diagnostics.shared_category_fractions(usage, ("video", "audio"))
    assert shares == {"unicode": {0: pytest.approx(2 / 4), 1: 0.0}, "baseline": {0: 0.0}}
    verdicts = claims.code_sharing_claims(shares)                 # what the chapter's verdicts take
    assert [v.outcome for v in verdicts] == [claims.INCONCLUSIVE] * 2


def test_same_code_agreement_runs_each_model_on_the_aligned_segments():
    class Fixed(torch.nn.Module):
        """Quantises a segment to its (scaled) input value: codes are set by the data."""

        def __init__(self, scale: int):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.scale = scale
            self.config = preset("released_av", overrides=["model.codebook_size=4"])

        def quantize(self, x, m):
            return (x[..., 0].long() * (self.scale if m == "video" else 1)) % 4, None

    onehot = lambda c: torch.nn.functional.one_hot(torch.tensor(c), 11).float()   # noqa: E731
    data = [{"audio": torch.tensor([1.0, 3.0])[:, None], "video": torch.tensor([1.0, 3.0])[:, None],
             "segment_label/audio": onehot([3, 4]), "segment_label/video": onehot([3, 4])}]
    out = diagnostics.same_code_agreement({("unicode", 0): Fixed(1), ("baseline", 0): Fixed(3)}, data)
    assert out["unicode"][0]["same_code"] == 1.0 and out["baseline"][0]["same_code"] == 0.0   # 3 % 4 != 1, 9 % 4 != 3
    assert out["unicode"][0]["segments"] == out["baseline"][0]["segments"] == 2


def test_interval_table_says_its_plus_minus_is_a_t_half_width():
    per_row = {"book recipe": {0: {"purity": 0.5, "mi/video": 1.0}, 1: {"purity": 0.7, "mi/video": 1.0},
                               2: {"purity": 0.6, "mi/video": 1.0}},
               "baseline": {0: {"purity": 0.2}}}
    table = diagnostics.interval_table(per_row, ["purity", "mi/video"], index="row")
    mean, half, _ = claims.t_interval([0.5, 0.7, 0.6])
    assert table.loc["book recipe", "purity"] == "0.60 ± 0.25" and half == pytest.approx(0.248, abs=1e-3)
    assert table.loc["baseline", "purity"] == "0.20"                 # one seed: the mean alone
    assert table.attrs["spread"] == claims.HALF_WIDTH and "95 % Student-t" in claims.HALF_WIDTH
    assert table.attrs["fold_constant"]                              # readable_table moves constant columns out
    named = diagnostics.interval_table({"r": {0: {"same_code": 0.5, "recon/audio": 2.0, "other": 1.0}}}, "club")
    assert list(named.columns) == ["same_code", "recon/audio"]       # the set's order, what the row has
    with pytest.raises(ValueError, match="unknown measure set 'clubs'.*club"):
        diagnostics.interval_table(per_row, "clubs")


@pytest.mark.parametrize("mean, half, text", [(0.228571, 0.0123, "0.23 ± 0.01"), (35.0, 2.1, "35 ± 2"),
                                              (0.0312, 0.0005, "0.0312 ± 0.0005"), (0.228571, math.inf, "0.23"),
                                              (3.4657, 0.0, "3.5 ± 0.0"), (0.0, 0.0, "0 ± 0"),
                                              (-1.234, 0.25, "-1.2 ± 0.2"), (math.nan, math.inf, "–"),
                                              (1.23e-5, 2e-5, "1.2e-05 ± 2e-05"), (0.0008, math.inf, "0.0008")])
def test_format_interval_rounds_to_what_the_interval_resolves(mean, half, text):
    assert diagnostics.format_interval(mean, half) == text


def test_results_tables_say_their_plus_minus_is_a_standard_deviation():
    records = [{"method": "unicode", "task": "ave", "direction": "V→A", "metric": v} for v in (10.0, 12.0)]
    ours = results_table(records, rows="method", cols=("task", "direction"))
    assert ours.loc["unicode", ("ave", "V→A")] == f"11.0 ± {np.std([10.0, 12.0], ddof=1):.1f}"
    paper = ours.map(lambda _: 44.0)
    assert ours.attrs["spread"] == side_by_side(ours, paper).attrs["spread"] == STANDARD_DEVIATION
    assert STANDARD_DEVIATION.startswith("mean ± standard deviation")


def test_model_diagnostics_reads_the_codes_it_encoded_once_as_the_usage_functions_do(avdigits_smoke):
    """The diagnostics encode the test split once per modality and derive the codes used and the same code on
    aligned segments from those codes: the same numbers as ``code_usage`` and ``aligned_code_agreement``, which
    encode the split themselves (a random model: codes spread over the codebook)."""
    from cmg_lib.data import load_dataset
    from cmg_lib.model import build_model
    from cmg_lib.usage import aligned_code_agreement, code_usage

    torch.manual_seed(0)
    model = build_model(preset("released_av")).eval()
    out = diagnostics.model_diagnostics(model, scale="smoke", cache_dir=avdigits_smoke)
    test = load_dataset("avdigits", "ave", "test", scale="smoke", cache_dir=avdigits_smoke)
    usage = code_usage(model, test)["all"]
    assert {m: out[f"codes_used/{m}"] for m in usage} == {m: int((c > 0).sum()) for m, c in usage.items()}
    assert all(out[f"codes_used/{m}"] > 1 for m in usage)
    agreement = aligned_code_agreement(model, test, ("audio", "video"))
    assert agreement["segments"] > 0
    assert (out["same_code"], out["same_code_chance"], out["same_code_bound"]) == pytest.approx(
        (agreement["same_code"], agreement["chance"], agreement["bound"]))
