"""The TCN paper's tasks with tcnkernels: seeded data sources (data.py)."""
from .data import adding_problem, copy_memory, copy_memory_blank_loss, load_music, mnist1d

__all__ = ["adding_problem", "copy_memory", "copy_memory_blank_loss", "load_music", "mnist1d"]
