"""The models the tasks train: the TCN (tcnkernels' fused blocks) and LSTM/GRU baselines with a
matched parameter count, each with the task's linear head (on the last step or on every step)."""
from torch import nn

from ..nn import TemporalConvNet


class SequenceModel(nn.Module):
    """body: (B, C_in, L) -> features; head: a Linear on the last step (-> (B, out)) or on every step
    (-> (B, L, out)), after dropout on the features (a recurrent body's only dropout; a TCN drops
    inside its blocks and passes 0)."""

    def __init__(self, body, width, out_features, every_step, recurrent, dropout=0.0):
        super().__init__()
        self.body, self.recurrent, self.every_step = body, recurrent, every_step
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, out_features)

    def forward(self, x):
        if self.recurrent:
            h = self.body(x.transpose(1, 2))[0]  # batch_first: (B, L, H)
        else:
            h = self.body(x).transpose(1, 2)     # (B, L, C)
        return self.head(self.dropout(h if self.every_step else h[:, -1]))


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def tcn_model(c_in, channels, kernel_size, dropout, out_features, every_step):
    body = TemporalConvNet(c_in, list(channels), kernel_size=kernel_size, dropout=dropout)
    return SequenceModel(body, channels[-1], out_features, every_step, recurrent=False)


def recurrent_model(kind, c_in, out_features, every_step, target_params, dropout=0.0):
    """A one-layer LSTM or GRU (cuDNN on a GPU) whose hidden size brings the whole model, head
    included, closest to `target_params`; `dropout` on its outputs (the TCN's rate, so that neither
    model is the only one regularised)."""
    cell = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    gates = 4 if kind == "lstm" else 3

    def count(h):  # gates * (h*c_in + h*h + 2h) + the head's h*out + out
        return gates * (h * c_in + h * h + 2 * h) + h * out_features + out_features

    hidden = min(range(1, 4097), key=lambda h: abs(count(h) - target_params))
    return SequenceModel(cell(c_in, hidden, batch_first=True), hidden, out_features, every_step, recurrent=True,
                         dropout=dropout)
