"""Every downstream task end to end on a fake frozen model and synthetic in-memory data.

The fake model quantizes ``x @ decoder[m]`` to the nearest row of a codebook whose first rows are the class
prototypes that generate the synthetic features. ``shared=True``: each decoder inverts its modality's (orthogonal)
mixing, so every modality lands on the same class codes -> cross-modal transfer is high. ``shared=False``: random
decoders, unrelated codes per modality -> cross-modal transfer is near chance, the same modality still works.
"""
import json

import pytest
import torch
from torch import nn

torch.set_num_threads(1)          # tiny tensors: threads only add contention on a shared 2-core box
from torch.utils.data import Dataset

from cmg_lib.config import Config, ModalitySpec, ModelConfig
from cmg_lib.downstream import TASKS, avs_predictions, read_results, run_task, runs_frame
from cmg_lib.cli import build_parser, format_metrics

D, C, T, L = 16, 8, 10, 48
SHAPES = {"audio": (16,), "video": (2, 2, 4), "text": (16,)}
KINDS = {"audio": "vector", "video": "grid", "text": "tokens"}
FAST = {"lr": 1e-2, "batch_size": 16}


class World:
    """Ground truth: class (+ background) prototypes in the code space and an orthogonal mixing per modality."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.prototypes = torch.randn(C + 1, D, generator=g) * 3
        self.mixing = {m: torch.linalg.qr(torch.randn(D, D, generator=g))[0] for m in SHAPES}

    def features(self, modality, classes, g):
        z = self.prototypes[classes] + 0.3 * torch.randn(len(classes), D, generator=g)
        return (z @ self.mixing[modality]).reshape(len(classes), *SHAPES[modality])


class FakeUniCode(nn.Module):
    def __init__(self, world, shared=True, modalities=("audio", "video", "text"), seed=1):
        super().__init__()
        specs = tuple(ModalitySpec(m, KINDS[m], SHAPES[m]) for m in modalities)
        self.config = Config(model=ModelConfig(modalities=specs, hidden_dim=D, codebook_size=L, n_heads=4),
                             preset="fake")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("codebook", torch.cat([world.prototypes, torch.randn(L - C - 1, D, generator=g) * 3]))
        self.decoders = {m: (world.mixing[m].T if shared else torch.linalg.qr(torch.randn(D, D, generator=g))[0])
                         for m in modalities}
        self.anchor = nn.Parameter(torch.zeros(1))
        self.eval()

    def encode(self, x, modality):
        return x.flatten(2) @ self.decoders[modality]

    def quantize(self, x, modality):
        z = self.encode(x, modality)
        indices = torch.cdist(z, self.codebook.expand(z.shape[0], -1, -1)).argmin(dim=-1)
        return indices, self.codebook[indices]


class ListDataset(Dataset):
    def __init__(self, items, num_classes):
        self.items, self.num_classes = items, num_classes
        self.class_names = [str(i) for i in range(num_classes)]
        self.modalities = tuple(m for m in SHAPES if items and m in items[0])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def clips(world, n, seed):
    """AVE/AVVP-like clips: one class per clip, an event window per modality, background elsewhere."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % C
        item = {"label": torch.tensor(label), "index": torch.tensor(i)}
        for m in SHAPES:
            start = int(torch.randint(0, T - 3, (1,), generator=g))
            stop = start + int(torch.randint(3, T - start + 1, (1,), generator=g))
            classes = torch.full((T,), C)
            classes[start:stop] = label
            item[m] = world.features(m, classes, g)
            item[f"segment_label/{m}"] = nn.functional.one_hot(classes, C + 1).float()
        items.append(item)
    return ListDataset(items, C)


def avs_clips(world, n, seed, mask_frames):
    """S4-like clips: 2 frames of 8x8x3 with two coloured squares (channel = class); the query names one."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        k, j = i % 3, (i + 1 + int(torch.randint(0, 2, (1,), generator=g))) % 3
        frames, masks = 0.05 * torch.rand(2, 8, 8, 3, generator=g), torch.zeros(2, 8, 8)
        for f in range(2):
            rk, rj = (int(r) for r in torch.randint(0, 6, (2,), generator=g))
            ck, cj = int(torch.randint(0, 2, (1,), generator=g)), int(torch.randint(5, 6, (1,), generator=g))
            if torch.rand(1, generator=g) < 0.5:
                ck, cj = cj, ck
            frames[f, rk:rk + 3, ck:ck + 3, k] = 1.0
            frames[f, rj:rj + 3, cj:cj + 3, j] = 1.0
            masks[f, rk:rk + 3, ck:ck + 3] = 1.0
        item = {"frames": frames, "mask": masks[:mask_frames], "label": torch.tensor(k), "index": torch.tensor(i)}
        for m in SHAPES:
            item[m] = world.features(m, torch.full((T,), k), g)
        items.append(item)
    return ListDataset(items, 3)


@pytest.fixture(scope="module")
def world():
    return World()


@pytest.fixture(scope="module")
def models(world):
    return {"shared": FakeUniCode(world, shared=True), "random": FakeUniCode(world, shared=False)}


@pytest.fixture(scope="module")
def data(world):
    return {
        "ave": {"train": clips(world, 96, 1), "val": clips(world, 32, 2), "test": clips(world, 64, 3)},
        "avvp": {"train": clips(world, 96, 4), "test": clips(world, 64, 5)},
        "ave_avvp": {"train": clips(world, 96, 6), "test": clips(world, 64, 7)},
        "ucf_vgg": {"vggsound": clips(world, 96, 8), "ucf": clips(world, 64, 9)},
        "avs": {"train": avs_clips(world, 120, 10, 1), "val": avs_clips(world, 24, 11, 2),
                "test": avs_clips(world, 40, 12, 2)},
        "retrieval": {"train": clips(world, 96, 13), "test": clips(world, 48, 14)},
    }


def run(task, model, data, train, test, **kw):
    kw = {"epochs": 8, **FAST, **kw}
    return run_task(task, model=model, data=data[task], train_modality=train, test_modality=test,
                    progress=False, **kw)


# ---- each task: shared codes transfer across modalities, random codes do not ------------------------------------

def test_ave_cross_modal_transfer(models, data):
    shared = run("ave", models["shared"], data, "video", "audio")
    rand = run("ave", models["random"], data, "video", "audio")
    upper = run("ave", models["random"], data, "audio", "audio")
    assert shared["metrics"]["accuracy"] >= 95.0
    assert rand["metrics"]["accuracy"] <= 40.0          # chance = 12.5 %
    assert upper["metrics"]["accuracy"] >= 85.0         # the labeled modality works with any distinct codes
    assert shared["n_train"] == 96 and shared["n_test"] == 64 and 1 <= shared["best_epoch"] <= 8
    assert shared["direction"] == "V→A" and shared["downstream"]["epochs"] == 8
    assert shared["pretrain"] == models["shared"].config.to_dict()


def test_ave_released_protocol_scores_the_training_clips_and_picks_the_best_test_epoch(models, data):
    res = run("ave", models["random"], data, "audio", "video", protocol="released")
    assert res["n_test"] == res["n_train"] == 96
    tests = [h["test"]["accuracy"] for h in res["history"]]
    assert res["metrics"]["accuracy"] == max(tests)
    assert res["best_epoch"] == tests.index(max(tests)) + 1


def test_avvp_localisation(models, data):
    shared = run("avvp", models["shared"], data, "audio", "video")
    rand = run("avvp", models["random"], data, "audio", "video")
    m = shared["metrics"]
    assert m["accuracy"] == m["precision"] >= 90.0 and m["recall"] >= 90.0
    assert m["f1"] == pytest.approx(2 * m["precision"] * m["recall"] / (m["precision"] + m["recall"]), abs=1e-3)
    assert rand["metrics"]["f1"] < shared["metrics"]["f1"] - 20.0
    assert shared["best_epoch"] == 8                    # heldout, no val split: the last epoch


def test_avvp_released_protocol_tests_the_other_modality_of_the_training_clips(models, data):
    res = run("avvp", models["random"], data, "video", "text", protocol="released", epochs=5)
    assert res["n_test"] == res["n_train"] == 96
    precisions = [h["test"]["precision"] for h in res["history"]]
    assert res["metrics"]["accuracy"] == max(precisions) and res["best_epoch"] == precisions.index(max(precisions)) + 1


def test_ave_avvp_cross_dataset_localisation(models, data):
    shared = run("ave_avvp", models["shared"], data, "video", "audio", epochs=6)
    rand = run("ave_avvp", models["random"], data, "video", "audio", epochs=6)
    assert shared["metrics"]["f1"] >= 90.0
    assert rand["metrics"]["f1"] < shared["metrics"]["f1"] - 20.0


def test_ucf_vgg_cross_dataset_classification(models, data):
    shared = run("ucf_vgg", models["shared"], data, "audio", "video")
    rand = run("ucf_vgg", models["random"], data, "audio", "video")
    upper = run("ucf_vgg", models["random"], data, "audio", "audio")
    assert shared["metrics"]["accuracy"] >= 95.0 and rand["metrics"]["accuracy"] <= 40.0
    assert shared["downstream"]["train_split"] == "vggsound" and shared["downstream"]["test_split"] == "ucf"
    assert upper["n_train"] + upper["n_test"] == 96 and upper["metrics"]["accuracy"] >= 90.0
    with pytest.raises(ValueError, match="pairs"):
        run("ucf_vgg", models["shared"], data, "text", "video")


def test_avs_segmentation_and_predictions(models, data):
    kw = {"epochs": 10, "lr": 1e-2, "batch_size": 16}
    shared = run("avs", models["shared"], data, "audio", "text", **kw)
    rand = run("avs", models["random"], data, "audio", "text", **kw)
    assert shared["metrics"]["miou"] >= 90.0 and shared["metrics"]["f_score"] >= 90.0
    # random queries pick the wrong square about half the time: chance mIoU ~50 +- 7.5 (40 test clips, IoU ~0 or
    # ~95 each), far below the >= 90 of shared codes
    assert rand["metrics"]["miou"] <= 70.0
    out = avs_predictions(model=models["shared"], data=data["avs"], train_modality="audio", test_modality="text",
                          count=3, progress=False, **kw)
    assert out["frames"].shape == (3, 8, 8, 3) and out["masks"].shape == out["pred"].shape == (3, 8, 8)
    assert out["result"]["metrics"] == shared["metrics"]          # same seed, same run
    from cmg_lib.viz.segmentation import overlay_figure
    fig = overlay_figure(out["frames"], out["masks"], out["pred"], out["prob"] > 0.5, titles=("f", "gt", "a", "b"))
    assert len(fig.axes) == 12
    with pytest.raises(ValueError, match="same N"):
        overlay_figure(out["frames"], out["masks"][:2], out["pred"], out["pred"])


def test_retrieval_x_to_audio(world, data):
    vt_shared = FakeUniCode(world, shared=True, modalities=("video", "text"))
    vt_random = FakeUniCode(world, shared=False, modalities=("video", "text"))
    kw = {"epochs": 10, "lr": 3e-3, "batch_size": 32}
    shared = run("retrieval", vt_shared, data, "text", "video", **kw)
    rand = run("retrieval", vt_random, data, "text", "video", **kw)
    # 48 test clips, 6 per class: with class-level codes the target sits among its class's top 6
    assert shared["metrics"]["class_R@1"] >= 90.0 and shared["metrics"]["R@10"] >= 60.0
    assert rand["metrics"]["class_R@1"] <= 60.0 and rand["metrics"]["R@10"] < shared["metrics"]["R@10"]
    with pytest.raises(ValueError, match="retrieves 'audio'"):
        run("retrieval", vt_shared, data, "audio", "video")


# ---- errors, determinism, results, CLI --------------------------------------------------------------------------

def test_error_paths(world, models, data):
    vt = FakeUniCode(world, modalities=("video", "text"))
    with pytest.raises(ValueError, match="pre-trained on"):
        run("ave", vt, data, "video", "audio")
    with pytest.raises(ValueError, match="unknown task"):
        run_task("nope", model=vt, data=data["ave"], progress=False)
    with pytest.raises(ValueError, match="no split 'val'"):
        run_task("ave", model=models["shared"], data={"train": data["ave"]["train"]}, progress=False)
    with pytest.raises(ValueError, match="empty"):
        run_task("ave", model=models["shared"], data={**data["ave"], "test": ListDataset([], C)}, progress=False)
    with pytest.raises(ValueError, match="lacks the keys"):
        run_task("avvp", model=models["shared"], data=data["avs"], train_modality="audio",
                 test_modality="text", progress=False)
    with pytest.raises(ValueError, match="unknown options"):
        run("ave", models["shared"], data, "video", "audio", learning_rate=1.0)
    with pytest.raises(ValueError, match="protocol"):
        run("ave", models["shared"], data, "video", "audio", protocol="paper")
    with pytest.raises(ValueError, match="exactly one"):
        run_task("ave", data=data["ave"], progress=False)
    assert set(TASKS) == {"ave", "avvp", "ave_avvp", "ucf_vgg", "avs", "retrieval", "oscmg"}


def test_determinism_and_results_file(models, data, tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    a = run("avvp", models["random"], data, "video", "audio", epochs=3, results_path=path, seed=5)
    b = run("avvp", models["random"], data, "video", "audio", epochs=3, results_path=path, seed=5)
    c = run("avvp", models["random"], data, "video", "audio", epochs=3, seed=6)
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
    assert c["history"] != a["history"]
    records = read_results(path)
    assert len(records) == 2 and records[0]["metrics"] == a["metrics"] and records[1]["seed"] == 5
    assert records[0]["pretrain"]["preset"] == "fake" and records[0]["pretrain_key"] == models["random"].config.key()
    table = runs_frame(path)
    assert list(table["task"]) == ["avvp", "avvp"] and {"precision", "recall", "f1", "accuracy"} <= set(table)
    with open(path, "a") as handle:
        handle.write('{"task": "ave", "metri\n')
    with pytest.raises(ValueError, match=":3 "):
        read_results(path)


def test_cli_runs_a_checkpoint_through_load_checkpoint(models, data, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("cmg_lib.downstream.tasks.load_checkpoint", lambda path: models["shared"])
    monkeypatch.setattr("cmg_lib.downstream.common.load_split",
                        lambda ctx, subset, split: data[subset][split], raising=True)
    import cmg_lib.downstream.classification as classification
    monkeypatch.setattr(classification, "load_split", lambda ctx, subset, split: data[subset][split])
    parser = build_parser()
    results = tmp_path / "r.jsonl"
    args = parser.parse_args(["downstream", "ave", "--ckpt", "x.pt", "--epochs", "4", "--opt", "lr=0.01",
                              "--opt", "batch_size=16", "--results", str(results), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    record = read_results(results)[0]
    assert record["checkpoint"] == "x.pt" and record["downstream"]["lr"] == 0.01
    assert "accuracy" in out and out.strip() == format_metrics(record)
    json.dumps(record)


def test_frozen_codes_are_cached_per_model_weights_for_named_data(world, data, monkeypatch):
    import cmg_lib.downstream.classification as classification
    from cmg_lib.downstream.common import clear_code_cache
    monkeypatch.setattr(classification, "load_split", lambda ctx, subset, split: data[subset][split])
    model, calls = FakeUniCode(world), []
    original = model.quantize
    monkeypatch.setattr(model, "quantize", lambda x, m: calls.append(m) or original(x, m))
    clear_code_cache()
    kw = dict(model=model, data="named", epochs=2, progress=False, **FAST)
    first = run_task("ave", **kw)
    n = len(calls)
    assert n > 0 and run_task("ave", **kw)["metrics"] == first["metrics"] and len(calls) == n   # all cached
    run_task("ave", code_cache=False, **kw)
    assert len(calls) == 2 * n
    with torch.no_grad():
        model.codebook.mul_(1.01)                     # new weights: the cache must not serve the old codes
    run_task("ave", **kw)
    assert len(calls) == 3 * n
    clear_code_cache()


@pytest.mark.parametrize("side", [(8, 8), (7, 9)])
def test_query_segmenter_sub_pixel_output_covers_every_pixel(side):
    """Space-to-depth in, sub-pixel logits out: full-resolution logits for even and odd frame sides, and each output
    pixel depends on its own input pixel (a change in one pixel changes the logits there)."""
    from cmg_lib.downstream.heads import QuerySegmenter
    torch.manual_seed(0)
    head = QuerySegmenter(dim=4, in_channels=3, width=4, grid_channels=2, factor=2).eval()
    frames, codes, grid = torch.randn(2, 3, *side), torch.randn(2, 5, 4), torch.randn(2, 2, 3, 3)
    logits = head(frames, codes, side, grid)
    assert logits.shape == (2, *side)
    assert head(frames, codes, (16, 16), grid).shape == (2, 16, 16)
    bumped = frames.clone()
    bumped[:, :, side[0] - 1, side[1] - 1] += 5.0                 # the last pixel (padded block on odd sides)
    assert (head(bumped, codes, side, grid) - logits)[:, side[0] - 1, side[1] - 1].abs().min() > 0
    with pytest.raises(ValueError, match="grid"):
        head(frames, codes, side)


def test_extraction_batches_from_shared_tables_equal_the_dataloader(avdigits_smoke):
    """An AV-Digits split (and a Subset of one) is read from its shared whole-split tensors in the same batches,
    order and values as a DataLoader gives; a split without a content identity goes through the DataLoader."""
    from torch.utils.data import DataLoader, Subset

    from cmg_lib.data import load_dataset
    from cmg_lib.downstream.common import _batches

    split = load_dataset("avdigits", "ave", "train", scale="smoke", cache_dir=avdigits_smoke)
    keys = ("audio", "video", "label")
    for dataset in (split, Subset(split, [5, 0, 3, 3, 9, 1, 2])):
        shared = list(_batches(dataset, keys, 3, renders=False))
        loaded = list(DataLoader(dataset, batch_size=3, shuffle=False))
        assert [b["label"].shape[0] for b in shared] == [b["label"].shape[0] for b in loaded]
        assert all(torch.equal(s[k], d[k]) for s, d in zip(shared, loaded) for k in keys)
    rendered = next(_batches(split, keys, 3, renders=True))
    assert set(rendered) >= set(keys) and "index" in rendered        # the DataLoader's batch: every key
