"""GS1 element strings in human-readable form, "(253)3610321456881 1234567890(17)010120(3902)001000".

`parse()` maps each application identifier (AI) to its value, name and meaning; validates the
GS1 mod-10 check digit of every AI that carries one (an invalid one is reported, never hidden);
and describes the 1- or 2-digit key printed between asterisks as the document line's control key.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

# Format codes: "N" numeric, "X" any character; "13" fixed length, "..20" up to 20.


@dataclass(frozen=True)
class AI:
    """One application identifier: short name, title, and how its value is built."""

    name: str
    title: str
    kind: str = "text"  # text | number | date | decimal | amount | amount_iso | key
    length: int | None = None  # fixed length of the whole value, if any
    max_length: int | None = None  # longest value, for variable-length AIs
    check_length: int = 0  # leading digits whose last digit is a GS1 mod-10 check digit
    numeric: bool = True


def _fixed(name: str, title: str, n: int, kind: str = "number", check: bool = False) -> AI:
    return AI(name, title, kind, length=n, max_length=n, check_length=n if check else 0)


def _var(name: str, title: str, n: int, numeric: bool = False, kind: str = "text") -> AI:
    return AI(name, title, kind, max_length=n, numeric=numeric)


TABLE: dict[str, AI] = {
    "00": _fixed("SSCC", "Serial Shipping Container Code", 18, "key", check=True),
    "01": _fixed("GTIN", "Global Trade Item Number", 14, "key", check=True),
    "02": _fixed("CONTENT", "GTIN of contained trade items", 14, "key", check=True),
    "10": _var("BATCH/LOT", "Batch or lot number", 20),
    "11": _fixed("PROD DATE", "Production date", 6, "date"),
    "12": _fixed("DUE DATE", "Due date", 6, "date"),
    "13": _fixed("PACK DATE", "Packaging date", 6, "date"),
    "15": _fixed("BEST BEFORE", "Best before date", 6, "date"),
    "16": _fixed("SELL BY", "Sell by date", 6, "date"),
    "17": _fixed("EXPIRY", "Expiration date", 6, "date"),
    "20": _fixed("VARIANT", "Internal product variant", 2),
    "21": _var("SERIAL", "Serial number", 20),
    "22": _var("CPV", "Consumer product variant", 20),
    "240": _var("ADDITIONAL ID", "Additional product identification", 30),
    "241": _var("CUST. PART No.", "Customer part number", 30),
    "250": _var("SECONDARY SERIAL", "Secondary serial number", 30),
    "251": _var("REF. TO SOURCE", "Reference to source entity", 30),
    "253": AI(
        "GDTI", "Global Document Type Identifier", "key", max_length=30, check_length=13, numeric=False
    ),
    "254": _var("GLN EXTENSION COMPONENT", "GLN extension component", 20),
    "255": AI("GCN", "Global Coupon Number", "key", max_length=25, check_length=13),
    "30": _var("VAR. COUNT", "Variable count of items", 8, numeric=True, kind="number"),
    "37": _var("COUNT", "Count of trade items contained", 8, numeric=True, kind="number"),
    "400": _var("ORDER NUMBER", "Customer's purchase order number", 30),
    "401": _var("GINC", "Global Identification Number for Consignment", 30),
    "402": _fixed("GSIN", "Global Shipment Identification Number", 17, "key", check=True),
    "403": _var("ROUTE", "Routing code", 30),
    "410": _fixed("SHIP TO LOC", "Ship to / deliver to GLN", 13, "key", check=True),
    "411": _fixed("BILL TO", "Bill to / invoice to GLN", 13, "key", check=True),
    "412": _fixed("PURCHASE FROM", "Purchased from GLN", 13, "key", check=True),
    "413": _fixed("SHIP FOR LOC", "Ship for / deliver for / forward to GLN", 13, "key", check=True),
    "414": _fixed("LOC No.", "Identification of a physical location (GLN)", 13, "key", check=True),
    "415": _fixed("PAY TO", "GLN of the invoicing party", 13, "key", check=True),
    "416": _fixed("PROD/SERV LOC", "GLN of the production or service location", 13, "key", check=True),
    "417": _fixed("PARTY", "Party GLN", 13, "key", check=True),
    "420": _var("SHIP TO POST", "Ship to / deliver to postal code", 20),
    "422": _fixed("ORIGIN", "Country of origin (ISO 3166 numeric)", 3),
    "7003": _fixed("EXPIRY TIME", "Expiration date and time", 10, "number"),
    "8003": AI(
        "GRAI", "Global Returnable Asset Identifier", "key", max_length=30, check_length=14, numeric=False
    ),
    "8004": _var("GIAI", "Global Individual Asset Identifier", 30),
    "8005": _fixed("PRICE PER UNIT", "Price per unit of measure", 6),
    "8007": _var("IBAN", "International Bank Account Number", 34),
    "8017": _fixed(
        "GSRN - PROVIDER", "Global Service Relation Number of the provider", 18, "key", check=True
    ),
    "8018": _fixed(
        "GSRN - RECIPIENT", "Global Service Relation Number of the recipient", 18, "key", check=True
    ),
    "8020": _var("REF No.", "Payment slip reference number", 25),
    "90": _var("INTERNAL", "Information mutually agreed between trading partners", 30),
    **{str(n): _var("INTERNAL", "Company internal information", 90) for n in range(91, 100)},
}

# AI families whose last digit is the number of decimals (e.g. 3902: amount with 2 decimals).
MEASURES = {
    "310": ("NET WEIGHT (kg)", "Net weight, kilograms"),
    "311": ("LENGTH (m)", "Length or first dimension, metres"),
    "312": ("WIDTH (m)", "Width, diameter or second dimension, metres"),
    "313": ("HEIGHT (m)", "Depth, thickness, height or third dimension, metres"),
    "314": ("AREA (m2)", "Area, square metres"),
    "315": ("NET VOLUME (l)", "Net volume, litres"),
    "316": ("NET VOLUME (m3)", "Net volume, cubic metres"),
    "320": ("NET WEIGHT (lb)", "Net weight, pounds"),
    "330": ("GROSS WEIGHT (kg)", "Logistic weight, kilograms"),
}
MONEY = {
    "390": ("AMOUNT", "Amount payable or coupon value, single monetary area", "amount"),
    "391": ("AMOUNT", "Amount payable, with ISO currency code", "amount_iso"),
    "392": ("PRICE", "Amount payable for a variable measure trade item, single monetary area", "amount"),
    "393": (
        "PRICE",
        "Amount payable for a variable measure trade item, with ISO currency code",
        "amount_iso",
    ),
}

ELEMENT = re.compile(r"\((\d{2,4})\)")  # an AI in parentheses (models.ocr_rescue checks OCR with it too)
_KEY = re.compile(r"\*(\d{1,2})\*")


def lookup(code: str) -> AI | None:
    """Return the definition of an AI, including the decimal-point families (310n, 390n...)."""
    if code in TABLE:
        return TABLE[code]
    if len(code) == 4 and code[3].isdigit():
        family, decimals = code[:3], int(code[3])
        if family in MEASURES:
            name, title = MEASURES[family]
            return AI(name, f"{title}, {decimals} decimal{'s' if decimals != 1 else ''}", "decimal", 6, 6)
        if family in MONEY:
            name, title, kind = MONEY[family]
            return AI(name, f"{title}, {decimals} decimal{'s' if decimals != 1 else ''}", kind, max_length=18)
    return None


def check_digit(body: str) -> int:
    """Return the GS1 mod-10 check digit for a string of digits (weights 3,1,3... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def validate_check_digit(number: str) -> dict:
    """Validate a number whose last digit is its GS1 check digit."""
    if len(number) < 2 or not number.isdigit():
        return {"valid": False, "found": number[-1:] or None, "expected": None}
    expected = check_digit(number[:-1])
    return {"valid": int(number[-1]) == expected, "found": number[-1], "expected": str(expected)}


def gs1_date(value: str, today: date | None = None) -> str | None:
    """Return YYMMDD as an ISO date (GS1 century rule; day 00 means the month's last day)."""
    if len(value) != 6 or not value.isdigit():
        return None
    yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
    today = today or date.today()
    # GS1 General Specifications 7.12: the year lies within 49 years back, 50 forward.
    year = today.year - today.year % 100 + yy
    if year - today.year >= 51:
        year -= 100
    elif today.year - year > 49:
        year += 100
    if not 1 <= mm <= 12:
        return None
    last = calendar.monthrange(year, mm)[1]
    if dd == 0:
        dd = last
    if dd > last:
        return None
    return date(year, mm, dd).isoformat()


def _field(code: str, raw: str) -> dict:
    """Describe one element: value, meaning, and any problem found."""
    ai = lookup(code)
    value = raw.replace(" ", "")
    out: dict = {"ai": code, "raw": raw, "value": value, "errors": []}
    if ai is None:
        out.update(name="UNKNOWN", title="Application identifier not in the table")
        out["errors"].append(f"unknown application identifier {code}")
        return out
    out.update(name=ai.name, title=ai.title)
    errors = out["errors"]
    if ai.length is not None and len(value) != ai.length:
        errors.append(f"expected {ai.length} characters, found {len(value)}")
    elif ai.max_length is not None and len(value) > ai.max_length:
        errors.append(f"expected at most {ai.max_length} characters, found {len(value)}")
    if not value:
        errors.append("empty value")
    numeric_part = value[: ai.check_length] if ai.check_length else value
    if (ai.numeric or ai.check_length) and not numeric_part.isdigit() and numeric_part:
        errors.append("expected digits")
    if ai.check_length and len(value) >= ai.check_length and value[: ai.check_length].isdigit():
        check = validate_check_digit(value[: ai.check_length])
        out["check_digit"] = check
        if not check["valid"]:
            errors.append(f"invalid check digit: found {check['found']}, expected {check['expected']}")
    if code in ("253", "255", "8003"):
        n = ai.check_length
        out["document_type" if code == "253" else "key"] = value[:n]
        serial = value[n:]
        if serial:
            out["serial"] = serial
    if ai.kind == "date":
        iso = gs1_date(value)
        out["date"] = iso
        if iso is None and not errors:
            errors.append("not a valid YYMMDD date")
    elif ai.kind in ("decimal", "amount", "amount_iso") and value.isdigit():
        decimals = int(code[3])
        digits = value
        if ai.kind == "amount_iso":
            out["currency"] = value[:3]
            digits = value[3:]
        if digits:
            whole, frac = digits[: len(digits) - decimals] or "0", digits[len(digits) - decimals :]
            text = f"{int(whole)}.{frac}" if decimals else str(int(whole))
            out["decimals"] = decimals
            out["amount" if ai.kind != "decimal" else "measure"] = text
    return out


def parse(text: str) -> dict:
    """Parse a human-readable GS1 element string; return {} when the text is not one.

    The result maps each AI to its field; "control_key" holds the digits between asterisks;
    "valid" is False when any field has an error (unknown AI, bad length, invalid check digit).
    """
    line = text.strip()
    marks = list(ELEMENT.finditer(line))
    if not marks or marks[0].start() != 0:
        return {}
    key = _KEY.search(line, marks[-1].end())
    end_of_data = key.start() if key else len(line)
    fields: dict = {}
    for i, mark in enumerate(marks):
        stop = marks[i + 1].start() if i + 1 < len(marks) else end_of_data
        if mark.start() >= end_of_data:
            break
        code = mark.group(1)
        field = _field(code, line[mark.end() : stop].strip())
        if code in fields:
            field["errors"].append(f"application identifier {code} repeated")
            code = f"{code}#{i}"
        fields[code] = field
    if key:
        fields["control_key"] = {
            "name": "CONTROL KEY",
            "title": "Control key of the document line",
            "value": key.group(1),
            "description": (
                "The 1- or 2-digit key printed between asterisks after the GS1 data: a control key "
                "of the document line, computed by the issuer; it is not a GS1 element and is not verified here."
            ),
            "errors": [],
        }
    trailing = line[key.end() :].strip() if key else ""
    if trailing:
        fields.setdefault("control_key", {"errors": []})["errors"].append(
            f"unexpected text after the key: {trailing}"
        )
    fields["valid"] = all(not f["errors"] for k, f in fields.items() if isinstance(f, dict))
    return fields
