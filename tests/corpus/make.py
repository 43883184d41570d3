"""Makes the workbook files of the nasty-file corpus with the tools operators' files come from.

Run once by hand (the files are committed; the test suite only reads them):
    python3 -m venv /tmp/corpus && /tmp/corpus/bin/pip install openpyxl==3.1.5 xlwt==1.3.0 odfpy==1.4.1 msoffcrypto-tool==6.1.0
    /tmp/corpus/bin/python tests/corpus/make.py
"""
import datetime
import io
import os

import msoffcrypto
import openpyxl
import openpyxl.styles
import xlwt
from odf.opendocument import OpenDocumentSpreadsheet
from odf.table import Table, TableCell, TableRow
from odf.text import P

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lists")
HEADER = ["Recipient ID", "Name", "Email", "Phone", "Born"]
ROWS = [
    ["0102031234", "Søren", "soren@example.org", 4520123456, datetime.date(1990, 3, 1)],
    ["0203041234", "Åse", "ase@example.org", 4520123457, datetime.date(1985, 12, 24)],
]


def out(name):
    return os.path.join(HERE, name)


def xlsx_bytes():
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "Recipients"
    ws.append(HEADER)
    for r in ROWS:
        ws.append(r)
    # Dates keep their date format; numbers typed as numbers.
    for row in ws.iter_rows(min_row=2, min_col=5, max_col=5):
        for c in row:
            c.number_format = "yyyy-mm-dd"
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def main():
    data = xlsx_bytes()
    open(out("openpyxl.xlsx"), "wb").write(data)
    # The same workbook with its content starting at C3, as lists pasted into a sheet are.
    book = openpyxl.Workbook()
    ws = book.active
    for i, r in enumerate([HEADER] + ROWS):
        for j, v in enumerate(r):
            ws.cell(row=3 + i, column=3 + j, value=v)
    book.save(out("offset.xlsx"))
    # Password-protected (Excel's "Encrypt with password").
    enc = io.BytesIO()
    office = msoffcrypto.OfficeFile(io.BytesIO(data))
    office.encrypt("secret", enc)
    open(out("encrypted.xlsx"), "wb").write(enc.getvalue())
    # Cut off halfway, as an interrupted upload leaves it.
    open(out("truncated.xlsx"), "wb").write(data[: len(data) // 2])
    # A workbook saved under a CSV name.
    open(out("workbook-named.csv"), "wb").write(data)
    # An empty workbook.
    buf = io.BytesIO()
    openpyxl.Workbook().save(buf)
    open(out("empty-sheet.xlsx"), "wb").write(buf.getvalue())
    # Excel 97-2003.
    book = xlwt.Workbook()
    sheet = book.add_sheet("Recipients")
    for j, h in enumerate(HEADER):
        sheet.write(0, j, h)
    date_style = xlwt.easyxf(num_format_str="yyyy-mm-dd")
    for i, r in enumerate(ROWS, start=1):
        for j, v in enumerate(r):
            if isinstance(v, datetime.date):
                sheet.write(i, j, v, date_style)
            else:
                sheet.write(i, j, v)
    book.save(out("legacy.xls"))
    # OpenDocument (LibreOffice Calc).
    doc = OpenDocumentSpreadsheet()
    table = Table(name="Recipients")
    for r in [HEADER] + ROWS:
        tr = TableRow()
        for v in r:
            if isinstance(v, int):
                cell = TableCell(valuetype="float", value=v)
            elif isinstance(v, datetime.date):
                cell = TableCell(valuetype="date", datevalue=v.isoformat())
            else:
                cell = TableCell(valuetype="string")
            cell.addElement(P(text=str(v)))
            tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    doc.save(out("calc.ods"))
    formulas()
    huge_dimension()


def formulas():
    """Formulas with no saved result, as programs that write workbooks without calculating
    them leave them: the first row's name is a formula."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.append(HEADER)
    for r in ROWS:
        ws.append(r)
    ws["B2"] = '=PROPER("søren")'
    book.save(out("formula-unsaved.xlsx"))
    doc = OpenDocumentSpreadsheet()
    table = Table(name="Recipients")
    for i, r in enumerate([HEADER] + ROWS):
        tr = TableRow()
        for j, v in enumerate(r):
            if i == 1 and j == 1:
                cell = TableCell(formula='of:=PROPER("søren")')
            else:
                cell = TableCell(valuetype="string")
                cell.addElement(P(text=str(v)))
            tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    doc.save(out("formula-unsaved.ods"))


def huge_dimension():
    """17 recipients in a sheet whose formatting reaches its last row: the sheet declares
    itself A1:E1048576."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.append(HEADER)
    for i in range(17):
        ws.append([f"{i + 1:04}", f"Person {i + 1}", f"p{i + 1}@example.org", "", ""])
    ws.cell(row=1048576, column=5).font = openpyxl.styles.Font(bold=True)
    book.save(out("huge-dimension.xlsx"))


if __name__ == "__main__":
    main()
