"""What convert says: an INFO log of what it swapped, a UserWarning when it swapped nothing, and
strict=True raising on a Conv1d it left unconverted (tcnkernels.conversion)."""
import logging
import warnings

import pytest
import torch
from torch import nn

import tcnkernels
from tcnkernels.conversion import unconverted_convs
from tcnkernels.ops.reference import ReferenceTemporalConvNet


class _Forecaster(nn.Module):
    """A user's model: a reference TCN and a head."""

    def __init__(self, head=None):
        super().__init__()
        self.tcn = ReferenceTemporalConvNet(3, [4, 6], kernel_size=2, dropout=0.0)
        self.head = head or nn.Linear(6, 1)


def test_convert_logs_what_it_swapped(caplog):
    with caplog.at_level(logging.INFO, logger="tcnkernels"), warnings.catch_warnings():
        warnings.simplefilter("error")  # swapping something warns nothing
        model = tcnkernels.convert(_Forecaster())
    assert "swapped 2 ReferenceTemporalBlock -> TemporalBlock" in caplog.text
    assert all(isinstance(b, tcnkernels.TemporalBlock) for b in model.tcn.network)


def test_convert_warns_when_it_swaps_nothing():
    model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=2), nn.ReLU())  # pads both sides: a reference conv + chomp
    with pytest.warns(UserWarning, match=r"swapped nothing in Sequential: it knows the authors' TemporalBlock"):
        assert tcnkernels.convert(model) is model


def test_strict_raises_naming_every_conv_left_unconverted():
    model = _Forecaster(head=nn.Conv1d(6, 1, 3))  # unpadded: it shortens the sequence, nothing to fuse
    with pytest.raises(ValueError, match=r"1 Conv1d left unconverted in _Forecaster: head \(Conv1d\)"):
        tcnkernels.convert(model, strict=True)
    assert isinstance(model.tcn.network[0], tcnkernels.TemporalBlock), "the blocks are swapped before it raises"


def test_strict_passes_when_every_conv_is_fused():
    model = tcnkernels.convert(_Forecaster(), strict=True)
    assert unconverted_convs(model) == []
    x = torch.randn(2, 3, 20)
    assert model.tcn(x).shape == (2, 6, 20)


def test_strict_must_be_a_bool():
    with pytest.raises(TypeError, match="strict"):
        tcnkernels.convert(_Forecaster(), strict="yes")
