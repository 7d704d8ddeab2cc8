import pytest

from cmg_lib.config import RECIPES, Config, ModalitySpec
from cmg_lib.model import build_model
from cmg_lib.presets import METHODS, PRESETS, TABLE1_METHODS, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_a_dict(name):
    cfg = preset(name)
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.key() == cfg.key()
    assert 2 <= len(cfg.model.modalities) <= 3


def test_paper_avt_uses_the_released_shapes_and_hyper_parameters():
    cfg = preset("paper_avt")
    m, t = cfg.model, cfg.train
    assert m.modality_names == ("audio", "video", "text")
    assert m.spec("audio").feature_shape == (128,)
    assert m.spec("video").feature_shape == (7, 7, 512) and m.spec("video").specific_dim == 2048
    assert m.spec("text").feature_shape == (768,)
    assert (m.hidden_dim, m.codebook_size, m.beta, m.ema_decay) == (256, 400, 0.25, 0.99)
    assert (m.club_hidden, m.club_steps, m.cpc_context, m.text_lstm_hidden) == (256, 5, 256, 128)
    assert (t.lr, t.milestones, t.lr_gamma, t.grad_clip, t.batch_size) == (4e-4, (10, 20, 30), 0.5, 0.5, 80)


def test_methods_set_the_table_switches():
    base = preset("released_avt", "baseline").model
    assert not any([base.club, base.cross_cpc, base.mm_ema, base.reset_code, base.cmcm]) and base.alignment == "none"
    uni = preset("released_avt", "unicode").model
    assert all([uni.club, uni.cross_cpc, uni.mm_ema, uni.reset_code, uni.cmcm])
    d = preset("released_avt", "dcid+codis").model
    assert d.club and d.cross_cpc and not d.cmcm and d.alignment == "codis"
    assert set(METHODS) >= {"baseline", "smit", "mst", "codis", "turn", "cmcm", "unicode"}


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = preset("released_avt", overrides=["model.beta=0.5", "club=false", "train.batch_size=8", "ema_form=joint"])
    assert cfg.model.beta == 0.5 and cfg.model.club is False and cfg.train.batch_size == 8
    assert cfg.model.ema_form == "joint"
    with pytest.raises(ValueError, match="unknown or ambiguous"):
        preset("released_avt", overrides=["nope=1"])
    with pytest.raises(ValueError, match="expects a boolean"):
        preset("released_avt", overrides=["club=maybe"])
    with pytest.raises(ValueError, match="is not one of"):
        preset("released_avt", overrides=["ema_form=sideways"])


def test_a_modality_width_is_overridden_by_name_and_the_others_are_kept():
    cfg = preset("book_av", overrides=["model.modalities.audio.specific_dim=256",
                                       "model.modalities.audio.club_dim=256"])
    assert (cfg.model.spec("audio").specific_dim, cfg.model.spec("audio").club_dim) == (256, 256)
    assert cfg.model.spec("video") == preset("book_av").model.spec("video")
    assert cfg.key() != preset("book_av").key()
    assert build_model(cfg).specific["audio"].linear.out_features == 256
    with pytest.raises(ValueError, match=r"name in \['audio', 'video'\] and a field in \['specific_dim'"):
        preset("book_av", overrides=["model.modalities.text.specific_dim=8"])
    with pytest.raises(ValueError, match="expected model.modalities.<name>.<field>"):
        preset("book_av", overrides=["model.modalities.audio.feature_shape=[3]"])
    with pytest.raises(ValueError, match="specific_dim expects int"):
        preset("book_av", overrides=["model.modalities.audio.specific_dim=wide"])
    with pytest.raises(ValueError, match="'audio': club_dim must be a positive integer, got 0"):
        preset("book_av", overrides=["model.modalities.audio.club_dim=0"])


def test_bad_names_raise_value_errors_that_list_the_choices():
    with pytest.raises(ValueError, match="paper_avt"):
        preset("paper_xyz")
    with pytest.raises(ValueError, match="unicode"):
        preset("released_avt", method="magic")
    with pytest.raises(ValueError, match="unknown modality"):
        ModalitySpec("smell", "vector", (3,))
    with pytest.raises(ValueError, match="feature_shape"):
        ModalitySpec("video", "grid", (512,))


@pytest.mark.parametrize("override, message", [
    ("train.lr=nan", "train.lr must be finite and positive, got nan"),
    ("train.lr=inf", "train.lr must be finite and positive, got inf"),
    ("train.lr=-0.001", "train.lr must be finite and positive, got -0.001"),
    ("train.grad_clip=0", "train.grad_clip must be finite and positive, got 0.0"),
    ("model.beta=nan", "model.beta must be a finite number, got nan"),
    ("model.dropout=-inf", "model.dropout must be a finite number, got -inf"),
    ("train.lr=fast", "train.lr expects float, got 'fast'"),
])
def test_non_finite_and_non_positive_floats_are_named(override, message):
    """Issue 26 item 8: ``train.lr=nan`` said "expects float" (nan is a float): now what is wrong with it."""
    with pytest.raises(ValueError) as err:
        preset("released_avt", overrides=[override])
    assert str(err.value) == message
    assert preset("released_avt", overrides=["train.lr=1e-3"]).train.lr == 0.001


@pytest.mark.parametrize("old, new", [("tiny", "released_avt"), ("tiny_av", "released_av"), ("tiny_at", "released_at"),
                                      ("tiny_vt", "released_vt")])
def test_old_preset_names_build_the_released_presets_with_a_warning(old, new):
    with pytest.warns(DeprecationWarning, match=f"'{old}' is now called '{new}'"):
        cfg = preset(old, "baseline", overrides=["train.seed=3"])
    assert cfg == preset(new, "baseline", overrides=["train.seed=3"]) and cfg.preset == new


def test_every_preset_names_its_recipe_and_the_recipe_table_agrees():
    for recipe, presets in RECIPES.items():
        assert {preset(name).recipe for name in presets.values()} == {recipe}
    assert {preset(n).recipe for n in PRESETS if n.startswith("paper_")} == {"released"}     # released at paper shapes
    assert Config().recipe == "released"                                    # every default is the released choice
    assert preset("book_av", overrides=["model.club_grad=both"]).recipe == "book"      # a switch keeps the recipe
    with pytest.raises(ValueError, match="recipe='paper' is not one of"):
        Config(recipe="paper")


def test_methods_are_listed_in_the_papers_table1_order():
    from cmg_lib.experiments import paper_table

    assert list(TABLE1_METHODS) == list(paper_table("table1").index)
    assert list(METHODS) == [*TABLE1_METHODS, "fcid", "micu"]          # the successors follow Table 1
