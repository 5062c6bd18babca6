"""Markdown tables for the speed report (and the developer tools that write their own reports)."""


def table(header, rows):
    """Lines of a Markdown table: `header` the column names, `rows` lists of cells (anything with str())."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
