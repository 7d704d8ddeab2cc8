"""The data tour's figures and tables (chapter "A tour of the data"), one call each, from plain structures:

* a clip is ``cmg_lib.data.avdigits.sample`` output (``frames``, ``audio_labels``, ``video_labels``; an AVS clip
  has ``mask`` and ``class_name``);
* probe results are ``cmg_lib.data.probes.run_probes`` output, variance shares ``feature_variance_shares``',
  segment agreement ``cmg_lib.data.avdigits.segment_agreement``'s.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .plots import _pyplot
from .tables import ReadableTable, readable_table, stack


def clip_frames(clip: Mapping):
    """The clip's frames in one row, each titled with the audio (a) and video (v) event of its second ("-": none).
    Returns the Figure."""
    plt = _pyplot()
    frames = clip["frames"]
    fig, axes = plt.subplots(1, len(frames), figsize=(1.2 * len(frames), 1.7), squeeze=False)
    for t, (ax, frame) in enumerate(zip(axes[0], frames)):
        ax.imshow(np.asarray(frame).squeeze(), cmap="gray")
        a, v = clip["audio_labels"][t], clip["video_labels"][t]
        ax.set_title(f"a:{a if a >= 0 else '-'} v:{v if v >= 0 else '-'}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"the {len(frames)} frames of the clip, with the audio (a) and video (v) event per second",
                 fontsize=9)
    return fig


def avs_frames(clip: Mapping, count: int = 5):
    """An AVS clip's first ``count`` frames (top) over the mask of the number its query says (bottom). Returns the
    Figure."""
    plt = _pyplot()
    n = min(count, len(clip["frames"]))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.2), squeeze=False)
    for t in range(n):
        axes[0, t].imshow(np.asarray(clip["frames"][t]).squeeze(), cmap="gray")
        axes[1, t].imshow(np.asarray(clip["mask"][t]).squeeze(), cmap="magma")
        axes[0, t].axis("off")
        axes[1, t].axis("off")
    fig.suptitle(f"AVS clip: query {clip['class_name']!r}; frames (top) and the said number's mask (bottom)",
                 fontsize=9)
    return fig


def agreement_table(agreement: Mapping[str, float]) -> ReadableTable:
    """Where audio and video agree, as shares of all segments (``segment_agreement``)."""
    import pandas as pd

    frame = pd.Series(agreement, name="share of segments").rename_axis("audio and video").to_frame()
    return readable_table(frame, caption="All pre-training clips' segments")


def probe_tables(probes: Mapping[str, Mapping[str, Mapping[str, float]]]) -> ReadableTable:
    """The linear probes in percent: within each modality (accuracy, on event segments, majority rate) and across
    modalities without alignment (on event segments, chance, the source's own accuracy), under the gap between the
    weakest within-modality probe and the best unaligned cross-modal one."""
    import pandas as pd

    within = (100 * pd.DataFrame(probes["within"]).T[["accuracy", "event_accuracy", "majority"]].astype(float))
    across = (100 * pd.DataFrame(probes["cross"]).T[["accuracy", "chance", "source_accuracy"]].astype(float))
    within, across = within.round(1), across.round(1)             # percentages to one decimal, as the text
    gap = within["event_accuracy"].min() - across["accuracy"].max()
    note = (f"On event segments, the weakest within-modality probe beats the best unaligned cross-modal probe by "
            f"{gap:.1f} points at this scale.")
    return stack([readable_table(within.rename_axis("modality"), caption="Within a modality: test accuracy (%)"),
                  readable_table(across.rename_axis("source→target"),
                                 caption="Across modalities, no alignment: test accuracy on event segments (%)")],
                 note)


def variance_table(shares: Mapping[str, Mapping[str, float]]) -> ReadableTable:
    """Per modality, the share of its feature variance explained by the class and by each nuisance factor alone,
    in percent (``feature_variance_shares``; "–" where a factor does not apply)."""
    import pandas as pd

    frame = (100 * pd.DataFrame(shares).T).round(1).rename_axis("modality")
    return readable_table(frame, caption="Share of the feature variance explained (%), event segments of the "
                                         "AVE-style test split")


def feature_table(dataset, count: int = 64) -> ReadableTable:
    """Shape, mean and standard deviation of each modality's features over the first ``count`` clips."""
    import pandas as pd
    import torch

    batch = torch.utils.data.default_collate([dataset[i] for i in range(min(count, len(dataset)))])
    stats = {m: {"batch shape": " × ".join(map(str, batch[m].shape)), "mean": float(batch[m].mean()),
                 "std": float(batch[m].std())} for m in dataset.modalities}
    return readable_table(pd.DataFrame(stats).T.rename_axis("modality"), decimals=2,
                          caption=f"Features of the first {min(count, len(dataset))} clips")

