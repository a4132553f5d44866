"""The allowed names params.py declares and the registries that implement them agree, and the
modality registry drives the CLI, the feature dispatch, the encoders and dvc.yaml."""
from __future__ import annotations

import importlib
import subprocess
import sys

import yaml

from pipeline import cli, nets
from pipeline.data.sources import SOURCES
from pipeline.fusion import FUSION_HEADS
from pipeline.modalities import MODALITIES, NAMES
from pipeline.params import DATA_SOURCES, FUSION_TYPES, Params

from dvc_project import ROOT



def test_fusion_types_are_the_fusion_heads():
    assert tuple(FUSION_HEADS) == FUSION_TYPES


def test_data_sources_are_the_source_classes():
    assert tuple(SOURCES) == DATA_SOURCES


def test_every_modality_has_its_encoder_features_and_params_section():
    for name, spec in MODALITIES.items():
        assert spec.name == name
        assert spec.encoders and set(spec.encoders) <= set(nets.ENCODERS)
        module = importlib.import_module(spec.features)
        assert callable(module.compute)  # the stage's body
        assert callable(module.eeg_features if name == "eeg" else module.features)  # the pure function predict calls
        assert spec.section in Params.model_fields
        assert 0 in spec.norm_axes  # statistics always pool over trials


def test_every_encoder_serves_a_modality():
    assert set(nets.ENCODERS) == {name for spec in MODALITIES.values() for name in spec.encoders}


def test_cli_modality_choices_are_the_registry():
    assert [m.value for m in cli.Modality] == list(NAMES)


def test_dvc_foreach_stages_cover_every_modality():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("normalize", "pretrain"):
        assert stages[name]["foreach"] == list(NAMES)
    assert {f"features_{m}" for m in NAMES} <= set(stages)
    for m in NAMES:
        assert stages[f"features_{m}"]["cmd"] == f"python -m pipeline features {m}"


def test_params_and_light_stages_import_no_heavy_library():
    """Validating params (every stage does it first) and the split stage load none of torch,
    MNE, librosa or dvclive."""
    code = ("import sys; import pipeline.cli, pipeline.stages.split; "
            "print(','.join(m for m in ('torch', 'mne', 'librosa', 'dvclive', 'gtda') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_training_tasks_import_no_feature_or_sklearn_library():
    """A pretrain or fuse worker loads torch and what training needs, not scikit-learn (1.5 s),
    MNE, librosa or giotto-tda: start-up is paid once per worker."""
    code = ("import sys; import pipeline.stages.pretrain, pipeline.stages.fuse; "
            "print(','.join(m for m in ('sklearn', 'mne', 'librosa', 'gtda') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_fusion_heads_import_no_training_code():
    """pipeline/fusion.py (the heads and the fused model) stands without the training loop, so a
    head can be read, built and exported without it."""
    code = "import sys; import pipeline.fusion; print(','.join(m for m in sys.modules if m.startswith('pipeline.training')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
