"""Write the held-out fix-rate corpus: one folder per task and ``tasks.json``.

A second corpus for ``benchmarks/fix_rate.py --corpus benchmarks/fix_corpus_heldout``,
written without looking at the product's analyzer, so that its figure says how the
product does on bugs it was not tuned on. Same families and the same manifest
schema as ``benchmarks/fix_corpus``: 32 tasks, two per family.

Every task is a short analysis with one bug in one cell that raises when the
notebook runs top to bottom. The failing cell is a :class:`Broken` cell: its source
and the one edit that fixes it (``before``, found exactly once, becomes ``after``).
Only the fixed notebook's last code cell prints ``expected``. ``hint`` is what a
correct did-you-mean has to name. Data files may sit in subfolders.

Usage: python benchmarks/fix_corpus_heldout/_make.py
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent
PER_FAMILY = 2
FAMILIES = (
    "name",
    "missing_import",
    "out_of_order",
    "attribute",
    "column",
    "key",
    "module",
    "file",
    "str_int",
    "sum_strings",
    "none_mutating",
    "off_by_one",
    "brackets",
    "indentation",
    "shape",
    "keyword",
)


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


@dataclass(frozen=True)
class Markdown:
    text: str


@dataclass(frozen=True)
class Cell:
    text: str


@dataclass(frozen=True)
class Broken:
    """The failing cell; replacing ``before`` (there exactly once) by ``after`` fixes it."""

    text: str
    before: str
    after: str

    def repaired(self) -> str:
        n = self.text.count(self.before)
        if n != 1:
            msg = f"{self.before!r} occurs {n} times in the broken cell"
            raise ValueError(msg)
        return self.text.replace(self.before, self.after)


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    error: str
    cells: tuple[Markdown | Cell | Broken, ...]
    expected: str
    hint: str
    data: dict[str, str] = field(default_factory=dict)


def md(text: str) -> Markdown:
    return Markdown(dedent(text))


def code(text: str) -> Cell:
    return Cell(dedent(text))


def broken(text: str, before: str, after: str) -> Broken:
    return Broken(dedent(text), before, after)


CASES: list[Case] = [
    # ---------------------------------------------------------------- name
    Case(
        "name_reservoir_weekly",
        "name",
        "NameError",
        (
            md("# Reservoir level\nDaily gauge readings, averaged per ISO week."),
            code("import pandas as pd"),
            code("""
                levels = pd.Series(
                    [412.0, 411.2, 410.9, 409.5, 409.8, 408.1, 407.7,
                     407.9, 406.3, 405.0, 404.2, 404.6, 403.1, 401.8],
                    index=pd.date_range("2024-03-04", periods=14, freq="D"),
                    name="level_m",
                )
                levels.tail(3)
            """),
            broken(
                """
                weekly = levels.groupby(levels.index.isocalendar().week).mean()
                change = weekly.diff().dropna()
                summary = (
                    f"{len(wekly)} weeks, "
                    f"mean level {weekly.mean():.2f} m, "
                    f"week-on-week change {change.iloc[0]:+.2f} m"
                )
                """,
                "len(wekly)",
                "len(weekly)",
            ),
            code("print(summary)"),
        ),
        expected="2 weeks, mean level 407.29 m, week-on-week change -5.19 m",
        hint="weekly",
    ),
    Case(
        "name_restock_shortfall",
        "name",
        "NameError",
        (
            md("# Restock\nWhat to order so that every SKU is back at its reorder point."),
            code("""
                stock = {"A-100": 12, "A-101": 3, "B-200": 0, "B-201": 7, "C-300": 4}
                reorder_point = {"A-100": 10, "A-101": 5, "B-200": 8, "B-201": 5, "C-300": 5}
            """),
            code("""
                below = [sku for sku, qty in stock.items() if qty < reorder_point[sku]]
                below
            """),
            broken(
                """
                def shortfall(stock, points, minimum_order=5):
                    orders = {}
                    for sku, qty in stock.items():
                        gap = points[sku] - qty
                        if gap > 0:
                            orders[sku] = max(gap, minimum_ordr)
                    return orders


                orders = shortfall(stock, reorder_point)
                """,
                "max(gap, minimum_ordr)",
                "max(gap, minimum_order)",
            ),
            code('print(f"order {sum(orders.values())} units of {len(orders)} SKUs: {sorted(orders)}")'),
        ),
        expected="order 18 units of 3 SKUs: ['A-101', 'B-200', 'C-300']",
        hint="minimum_order",
    ),
    # ---------------------------------------------------------------- missing_import
    Case(
        "missing_import_timezone_pairs",
        "missing_import",
        "NameError",
        (
            md("# Meeting overlap\nWhich two colleagues are closest and farthest apart in time zone."),
            code("import statistics"),
            code("""
                team = ["Asha", "Bruno", "Chen", "Dana"]
                utc_offset = {"Asha": 5.5, "Bruno": 1.0, "Chen": 8.0, "Dana": -5.0}
            """),
            broken(
                """
                pairs = []
                for a, b in itertools.combinations(team, 2):
                    gap = abs(utc_offset[a] - utc_offset[b])
                    pairs.append((gap, a, b))
                pairs.sort()
                """,
                "pairs = []",
                "import itertools\n\npairs = []",
            ),
            code("""
                gap, a, b = pairs[0]
                far_gap, far_a, far_b = pairs[-1]
                mean_gap = statistics.mean(p[0] for p in pairs)
                print(f"closest {a}-{b} {gap}h, farthest {far_a}-{far_b} {far_gap}h, mean {mean_gap:.2f}h")
            """),
        ),
        expected="closest Asha-Chen 2.5h, farthest Chen-Dana 13.0h, mean 7.25h",
        hint="itertools",
    ),
    Case(
        "missing_import_tag_index",
        "missing_import",
        "NameError",
        (
            md("# Blog tags\nCount tags, then list the posts under each tag."),
            code("from collections import Counter"),
            code("""
                posts = [
                    {"title": "Rust in production", "tags": ["rust", "ops"]},
                    {"title": "Tracing 101", "tags": ["ops", "observability"]},
                    {"title": "Borrow checker tips", "tags": ["rust"]},
                    {"title": "SLOs that matter", "tags": ["ops", "observability", "sre"]},
                ]
                tag_counts = Counter(tag for post in posts for tag in post["tags"])
                tag_counts.most_common(2)
            """),
            broken(
                """
                by_tag = defaultdict(list)
                for post in posts:
                    for tag in post["tags"]:
                        by_tag[tag].append(post["title"])
                """,
                "by_tag = defaultdict(list)",
                "from collections import defaultdict\n\nby_tag = defaultdict(list)",
            ),
            code("""
                top, n = tag_counts.most_common(1)[0]
                print(f"{top} ({n} posts): {'; '.join(sorted(by_tag[top]))}")
            """),
        ),
        expected="ops (3 posts): Rust in production; SLOs that matter; Tracing 101",
        hint="collections",
    ),
    # ---------------------------------------------------------------- out_of_order
    Case(
        "out_of_order_expense_fx",
        "out_of_order",
        "NameError",
        (
            md("# Team expenses in EUR"),
            code("import pandas as pd"),
            code("""
                expenses = pd.DataFrame(
                    {
                        "team": ["infra", "data", "infra", "web", "data"],
                        "amount": [120.0, 80.0, 45.5, 300.0, 19.99],
                        "currency": ["USD", "EUR", "GBP", "USD", "GBP"],
                    }
                )
            """),
            broken(
                """
                expenses["amount_eur"] = [
                    to_eur(amount, cur) for amount, cur in zip(expenses["amount"], expenses["currency"])
                ]
                by_team = expenses.groupby("team")["amount_eur"].sum().round(2)
                """,
                'expenses["amount_eur"] = [',
                'RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}\n\n\n'
                "def to_eur(amount, currency):\n"
                "    return round(amount * RATES[currency], 2)\n\n\n"
                'expenses["amount_eur"] = [',
            ),
            md("## Helpers"),
            code("""
                RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}


                def to_eur(amount, currency):
                    return round(amount * RATES[currency], 2)
            """),
            code('print("EUR by team:", by_team.to_dict())'),
        ),
        expected="EUR by team: {'data': 103.39, 'infra': 163.63, 'web': 276.0}",
        hint="to_eur",
    ),
    Case(
        "out_of_order_age_bands",
        "out_of_order",
        "NameError",
        (
            md("# Clinic visits by age band"),
            code("import pandas as pd"),
            code("""
                patients = pd.DataFrame(
                    {"id": range(1, 9), "age": [4, 17, 18, 33, 64, 65, 80, 41]}
                )
            """),
            broken(
                """
                patients["band"] = pd.cut(
                    patients["age"], bins=AGE_EDGES, labels=["child", "adult", "senior"], right=False
                )
                counts = patients["band"].value_counts().sort_index()
                """,
                'patients["band"] = pd.cut(',
                'AGE_EDGES = [0, 18, 65, 120]\npatients["band"] = pd.cut(',
            ),
            code("AGE_EDGES = [0, 18, 65, 120]"),
            code('print("visits per band:", {str(k): int(v) for k, v in counts.items()})'),
        ),
        expected="visits per band: {'child': 2, 'adult': 4, 'senior': 2}",
        hint="AGE_EDGES",
    ),
    # ---------------------------------------------------------------- attribute
    Case(
        "attribute_drop_duplicates_chain",
        "attribute",
        "AttributeError",
        (
            md("# Newsletter sign-ups\nOne row per address, case and blanks ignored."),
            code("import pandas as pd"),
            code("""
                signups = pd.DataFrame(
                    {
                        "email": [" Ana@Example.com", "ana@example.com", None, "bo@example.com ", "cy@example.com"],
                        "source": ["web", "app", "web", "web", "event"],
                    }
                )
            """),
            broken(
                """
                clean = (
                    signups.dropna(subset=["email"])
                    .assign(email=lambda d: d["email"].str.strip().str.lower())
                    .drop_duplicate(subset=["email"])
                    .reset_index(drop=True)
                )
                """,
                ".drop_duplicate(",
                ".drop_duplicates(",
            ),
            code("""
                print(f"{len(clean)} unique sign-ups; first {clean.loc[0, 'email']} via {clean.loc[0, 'source']}")
            """),
        ),
        expected="3 unique sign-ups; first ana@example.com via web",
        hint="drop_duplicates",
    ),
    Case(
        "attribute_index_str_strip",
        "attribute",
        "AttributeError",
        (
            md("# Survey export\nThe export pads its headers with spaces."),
            code("import pandas as pd"),
            code("""
                survey = pd.read_csv("survey.csv")
                list(survey.columns)
            """),
            broken(
                """
                survey.columns = survey.columns.str.strp().str.replace(" ", "_").str.lower()
                survey.head()
                """,
                ".str.strp()",
                ".str.strip()",
            ),
            code("""
                survey["home_city"] = survey["home_city"].str.strip().str.title()
                mean_age = survey.groupby("home_city")["age_years"].mean().round(1)
            """),
            code('print("mean age by city:", mean_age.to_dict())'),
        ),
        expected="mean age by city: {'Porto': 36.0, 'Vigo': 29.5}",
        hint="strip",
        data={
            "survey.csv": " Respondent , Age Years , Home City \n1,31,porto \n2,24, vigo\n3,41,Porto\n4,35,VIGO\n",
        },
    ),
    # ---------------------------------------------------------------- column
    Case(
        "column_named_agg_quantity",
        "column",
        "KeyError",
        (
            md("# Store performance"),
            code("import pandas as pd"),
            code("""
                orders = pd.read_csv("orders.csv")
                orders.dtypes
            """),
            broken(
                """
                orders["revenue"] = orders["quantity"] * orders["unit_price"]
                per_store = orders.groupby("store").agg(
                    revenue=("revenue", "sum"),
                    items=("quanity", "sum"),
                    orders=("order_id", "nunique"),
                )
                per_store["avg_basket"] = (per_store["revenue"] / per_store["orders"]).round(2)
                """,
                '("quanity", "sum")',
                '("quantity", "sum")',
            ),
            code("""
                best = per_store["revenue"].idxmax()
                row = per_store.loc[best]
                print(
                    f"best store {best}: revenue {row['revenue']:.2f}, "
                    f"items {int(row['items'])}, basket {row['avg_basket']}"
                )
            """),
        ),
        expected="best store North: revenue 80.50, items 9, basket 40.25",
        hint="quantity",
        data={
            "orders.csv": (
                "order_id,store,product,quantity,unit_price\n"
                "1,North,tea,4,6.50\n"
                "1,North,mug,1,12.00\n"
                "2,South,tea,2,6.50\n"
                "3,North,kettle,1,29.00\n"
                "3,North,mug,3,4.50\n"
                "4,South,mug,5,4.00\n"
            )
        },
    ),
    Case(
        "column_subset_volume",
        "column",
        "KeyError",
        (
            md("# Volume-weighted price since May 6"),
            code("import pandas as pd"),
            code("""
                prices = pd.DataFrame(
                    {
                        "date": pd.to_datetime(
                            ["2024-05-02", "2024-05-03", "2024-05-06", "2024-05-07", "2024-05-08"]
                        ),
                        "close": [101.2, 102.0, 99.8, 100.4, 103.1],
                        "volume": [1500, 900, 2100, 1200, 1700],
                        "ticker": ["ACME"] * 5,
                    }
                )
            """),
            broken(
                """
                recent = prices[prices["date"] >= "2024-05-06"]
                subset = recent[["date", "close", "volumn"]].set_index("date")
                vwap = (subset["close"] * subset["volume"]).sum() / subset["volume"].sum()
                """,
                '"close", "volumn"]',
                '"close", "volume"]',
            ),
            code('print(f"VWAP over {len(subset)} sessions: {vwap:.3f}")'),
        ),
        expected="VWAP over 3 sessions: 101.066",
        hint="volume",
    ),
    # ---------------------------------------------------------------- key
    Case(
        "key_nested_postcode",
        "key",
        "KeyError",
        (
            md("# Customers per postal district"),
            code("""
                import json

                with open("customers.json") as fh:
                    customers = json.load(fh)
                len(customers)
            """),
            broken(
                """
                districts = {}
                for cust in customers:
                    addr = cust["address"]
                    district = addr["zipcode"].split()[0]
                    districts.setdefault(district, []).append(cust["name"])
                """,
                'addr["zipcode"]',
                'addr["postcode"]',
            ),
            code("""
                largest = max(districts, key=lambda d: len(districts[d]))
                print(f"{len(districts)} districts; largest {largest}: {', '.join(sorted(districts[largest]))}")
            """),
        ),
        expected="3 districts; largest LS1: Ines, Kwame",
        hint="postcode",
        data={
            "customers.json": json.dumps(
                [
                    {"id": 1, "name": "Kwame", "address": {"city": "Leeds", "postcode": "LS1 4AP"}},
                    {"id": 2, "name": "Mira", "address": {"city": "York", "postcode": "YO1 7HH"}},
                    {"id": 3, "name": "Ines", "address": {"city": "Leeds", "postcode": "LS1 5DT"}},
                    {"id": 4, "name": "Otto", "address": {"city": "Leeds", "postcode": "LS6 2QL"}},
                ],
                indent=1,
            )
            + "\n"
        },
    ),
    Case(
        "key_series_label_case",
        "key",
        "KeyError",
        (
            md("# Units per city"),
            code("import pandas as pd"),
            code("""
                sales = pd.DataFrame(
                    {
                        "city": ["Berlin", "Munich", "Hamburg", "Berlin", "Munich", "Berlin"],
                        "units": [14, 9, 6, 11, 7, 5],
                    }
                )
                totals = sales.groupby("city")["units"].sum()
                totals
            """),
            broken(
                """
                top_city = totals.idxmax()
                berlin_share = totals["berlin"] / totals.sum()
                gap = totals.max() - totals.min()
                """,
                'totals["berlin"]',
                'totals["Berlin"]',
            ),
            code('print(f"top {top_city}, Berlin share {berlin_share:.1%}, gap {gap} units")'),
        ),
        expected="top Berlin, Berlin share 57.7%, gap 24 units",
        hint="Berlin",
    ),
    # ---------------------------------------------------------------- module
    Case(
        "module_functools_reduce",
        "module",
        "ModuleNotFoundError",
        (
            md("# Compound growth\nQuarterly growth factors multiplied out."),
            code("""
                growth = {"Q1": 1.021, "Q2": 0.984, "Q3": 1.047, "Q4": 1.012}
                start_value = 2500.0
            """),
            broken(
                """
                import operator
                from functool import reduce

                factor = reduce(operator.mul, growth.values(), 1.0)
                """,
                "from functool import",
                "from functools import",
            ),
            code("""
                end_value = start_value * factor
                print(f"year factor {factor:.4f}, {start_value:.0f} -> {end_value:.2f}")
            """),
        ),
        expected="year factor 1.0645, 2500 -> 2661.26",
        hint="functools",
    ),
    Case(
        "module_numpy_linalg_typo",
        "module",
        "ModuleNotFoundError",
        (
            md("# Depot distances\nProjected coordinates in km; which depot is nearest the hub?"),
            code("import numpy as np"),
            code("""
                hub = np.array([12.0, 40.0])
                depots = {
                    "east": np.array([30.0, 44.0]),
                    "west": np.array([-3.0, 31.0]),
                    "north": np.array([15.0, 58.5]),
                }
            """),
            broken(
                """
                from numpy.linlag import norm

                dist = {name: float(norm(xy - hub)) for name, xy in depots.items()}
                nearest = min(dist, key=dist.get)
                """,
                "numpy.linlag",
                "numpy.linalg",
            ),
            code("""
                ranked = sorted(round(d, 1) for d in dist.values())
                print(f"nearest {nearest} at {dist[nearest]:.2f} km; all: {ranked}")
            """),
        ),
        expected="nearest west at 17.49 km; all: [17.5, 18.4, 18.7]",
        hint="numpy.linalg",
    ),
    # ---------------------------------------------------------------- file
    Case(
        "file_subfolder_name_typo",
        "file",
        "FileNotFoundError",
        (
            md("# Electricity meter\nReadings exported into `raw/`."),
            code("import pandas as pd"),
            broken(
                """
                readings = pd.read_csv("raw/meter_reading.csv", parse_dates=["day"])
                readings = readings.sort_values("day")
                readings["kwh"] = readings["meter"].diff()
                """,
                "raw/meter_reading.csv",
                "raw/meter_readings.csv",
            ),
            code("""
                peak = readings.loc[readings["kwh"].idxmax()]
                print(f"used {readings['kwh'].sum():.1f} kWh; peak {peak['kwh']:.1f} on {peak['day']:%a %d %b}")
            """),
        ),
        expected="used 41.3 kWh; peak 17.7 on Thu 11 Jan",
        hint="meter_readings.csv",
        data={
            "raw/meter_readings.csv": (
                "day,meter\n2024-01-08,10234.5\n2024-01-10,10258.1\n2024-01-09,10242.9\n2024-01-11,10275.8\n"
            )
        },
    ),
    Case(
        "file_missing_subfolder",
        "file",
        "FileNotFoundError",
        (
            md("# High tides\nThe tide table lives in `inputs/`."),
            broken(
                """
                highs = []
                with open("tides.txt") as fh:
                    for line in fh:
                        day, clock, height = line.split()
                        highs.append((float(height), f"{day} {clock}"))
                """,
                'open("tides.txt")',
                'open("inputs/tides.txt")',
            ),
            code("""
                highs.sort(reverse=True)
                top_height, top_when = highs[0]
            """),
            code('print(f"{len(highs)} high tides; highest {top_height:.2f} m at {top_when}")'),
        ),
        expected="4 high tides; highest 4.87 m at 2024-06-02 19:40",
        hint="inputs/tides.txt",
        data={
            "inputs/tides.txt": (
                "2024-06-01 06:12 4.21\n2024-06-01 18:55 4.64\n2024-06-02 07:01 4.38\n2024-06-02 19:40 4.87\n"
            )
        },
    ),
    # ---------------------------------------------------------------- str_int
    Case(
        "str_int_station_codes",
        "str_int",
        "TypeError",
        (
            md("# Station codes"),
            code("""
                stations = ["Kew Gardens", "Heathrow", "Northolt"]
                elevation_m = {"Kew Gardens": 6, "Heathrow": 25, "Northolt": 38}
            """),
            broken(
                """
                codes = {}
                for idx, name in enumerate(stations, start=1):
                    short = name.replace(" ", "")[:3].upper()
                    code = short + "-" + idx
                    codes[code] = elevation_m[name]
                """,
                '"-" + idx',
                '"-" + str(idx)',
            ),
            code('print("codes:", ", ".join(f"{c}={m}m" for c, m in codes.items()))'),
        ),
        expected="codes: KEW-1=6m, HEA-2=25m, NOR-3=38m",
        hint="str(",
    ),
    Case(
        "str_int_iso_week_files",
        "str_int",
        "TypeError",
        (
            md("# Weekly export file names"),
            code("""
                from datetime import date, timedelta

                start = date(2024, 12, 23)
            """),
            broken(
                """
                names = []
                for week in range(3):
                    day = start + timedelta(weeks=week)
                    iso = day.isocalendar()
                    names.append("export_" + str(iso.year) + "_w" + iso.week + ".csv")
                """,
                '"_w" + iso.week',
                '"_w" + str(iso.week)',
            ),
            code('print(" ".join(names))'),
        ),
        expected="export_2024_w52.csv export_2025_w1.csv export_2025_w2.csv",
        hint="str(",
    ),
    # ---------------------------------------------------------------- sum_strings
    Case(
        "sum_strings_refund_csv",
        "sum_strings",
        "TypeError",
        (
            md("# Refunds"),
            code("""
                import csv

                with open("refunds.csv", newline="") as fh:
                    rows = list(csv.DictReader(fh))
                len(rows)
            """),
            broken(
                """
                by_reason = {}
                for row in rows:
                    by_reason.setdefault(row["reason"], []).append(row["order"])
                total = sum(row["amount"] for row in rows)
                commonest = max(by_reason, key=lambda r: len(by_reason[r]))
                """,
                'sum(row["amount"] for row in rows)',
                'sum(float(row["amount"]) for row in rows)',
            ),
            code('print(f"refunded {total:.2f} over {len(rows)} orders; commonest reason: {commonest}")'),
        ),
        expected="refunded 96.15 over 4 orders; commonest reason: damaged",
        hint="float",
        data={
            "refunds.csv": (
                "date,order,amount,reason\n"
                "2024-02-01,A17,19.90,damaged\n"
                "2024-02-03,A22,45.00,late\n"
                "2024-02-03,A25,7.25,damaged\n"
                "2024-02-06,A31,24.00,damaged\n"
            )
        },
    ),
    Case(
        "sum_strings_fasta_join",
        "sum_strings",
        "TypeError",
        (
            md("# GC content\nA FASTA record wrapped over several lines."),
            code('''
                record = """>seq1 partial promoter
                ATGCGCGTTA
                GGCATTACGC
                CCGTA
                """
            '''),
            broken(
                """
                lines = record.strip().splitlines()
                header = lines[0][1:].split()[0]
                sequence = sum(line.strip() for line in lines[1:])
                gc = (sequence.count("G") + sequence.count("C")) / len(sequence)
                """,
                "sum(line.strip() for line in lines[1:])",
                '"".join(line.strip() for line in lines[1:])',
            ),
            code('print(f"{header}: {len(sequence)} bp, GC {gc:.1%}")'),
        ),
        expected="seq1: 25 bp, GC 56.0%",
        hint="join",
    ),
    # ---------------------------------------------------------------- none_mutating
    Case(
        "none_mutating_inplace_sort",
        "none_mutating",
        "TypeError",
        (
            md("# League podium"),
            code("import pandas as pd"),
            code("""
                scores = pd.DataFrame(
                    {"player": ["Ines", "Tomas", "Yuki", "Bea", "Olu"], "points": [31, 44, 27, 44, 39]}
                )
            """),
            broken(
                """
                leaders = scores.sort_values(["points", "player"], ascending=[False, True], inplace=True)
                podium = leaders["player"].head(3).tolist()
                """,
                ", inplace=True",
                "",
            ),
            code('print("podium:", " > ".join(podium))'),
        ),
        expected="podium: Bea > Tomas > Olu",
        hint="None",
    ),
    Case(
        "none_mutating_enumerate_sort",
        "none_mutating",
        "TypeError",
        (
            md("# Contributors, alphabetically"),
            code("""
                commits = [
                    {"sha": "a1f", "author": "noor"},
                    {"sha": "b2e", "author": "felix"},
                    {"sha": "c3d", "author": "noor"},
                    {"sha": "d4c", "author": "amara"},
                    {"sha": "e5b", "author": "felix"},
                ]
            """),
            broken(
                """
                unique_authors = {c["author"] for c in commits}
                roster = []
                for rank, author in enumerate(list(unique_authors).sort(), start=1):
                    n = sum(c["author"] == author for c in commits)
                    roster.append(f"{rank}. {author} ({n})")
                """,
                "list(unique_authors).sort()",
                "sorted(unique_authors)",
            ),
            code('print(" | ".join(roster))'),
        ),
        expected="1. amara (1) | 2. felix (2) | 3. noor (2)",
        hint="sorted",
    ),
    # ---------------------------------------------------------------- off_by_one
    Case(
        "off_by_one_daily_returns",
        "off_by_one",
        "IndexError",
        (
            md("# Daily returns"),
            code("import numpy as np"),
            code("closes = np.array([50.0, 51.5, 50.47, 52.99, 53.52, 52.45])"),
            broken(
                """
                returns = []
                for i in range(len(closes)):
                    returns.append(closes[i + 1] / closes[i] - 1)
                returns = np.array(returns)
                """,
                "range(len(closes))",
                "range(len(closes) - 1)",
            ),
            code("""
                best = int(np.argmax(returns)) + 1
                print(f"{len(returns)} returns, best day {best} ({returns.max():+.2%}), mean {returns.mean():+.3%}")
            """),
        ),
        expected="5 returns, best day 3 (+4.99%), mean +0.999%",
        hint="len(closes) - 1",
    ),
    Case(
        "off_by_one_month_labels",
        "off_by_one",
        "IndexError",
        (
            md("# Invoices per month"),
            code("""
                from datetime import date

                MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                invoices = [
                    (date(2024, 11, 3), 120.0),
                    (date(2024, 11, 21), 80.5),
                    (date(2024, 12, 18), 240.0),
                    (date(2025, 1, 5), 99.5),
                ]
            """),
            broken(
                """
                per_month = {}
                for day, amount in invoices:
                    label = f"{MONTHS[day.month]} {day.year}"
                    per_month[label] = per_month.get(label, 0) + amount
                """,
                "MONTHS[day.month]",
                "MONTHS[day.month - 1]",
            ),
            code('print("; ".join(f"{k}: {v:.2f}" for k, v in per_month.items()))'),
        ),
        expected="Nov 2024: 200.50; Dec 2024: 240.00; Jan 2025: 99.50",
        hint="day.month - 1",
    ),
    # ---------------------------------------------------------------- brackets
    Case(
        "brackets_else_colon",
        "brackets",
        "SyntaxError",
        (
            md("# Air quality labels"),
            code("readings = [12, 48, 51, 99, 100, 101, 175]"),
            broken(
                """
                def classify(aqi):
                    if aqi <= 50:
                        return "good"
                    elif aqi <= 100:
                        return "moderate"
                    else
                        return "unhealthy"


                labels = [classify(v) for v in readings]
                """,
                "    else\n",
                "    else:\n",
            ),
            code("""
                from collections import Counter

                print("labels:", dict(Counter(labels)))
            """),
        ),
        expected="labels: {'good': 2, 'moderate': 3, 'unhealthy': 2}",
        hint=":",
    ),
    Case(
        "brackets_multiline_stats",
        "brackets",
        "SyntaxError",
        (
            md("# Seedling heights"),
            code("import numpy as np"),
            code("heights = np.array([12.1, 14.8, 13.3, 15.9, 11.7, 14.2])"),
            broken(
                """
                stats = {
                    "mean": round(float(np.mean(heights)), 2),
                    "std": round(float(np.std(heights, ddof=1), 2),
                    "range": round(float(np.ptp(heights)), 2),
                }
                """,
                "ddof=1), 2)",
                "ddof=1)), 2)",
            ),
            code('print(", ".join(f"{k}={v}" for k, v in stats.items()))'),
        ),
        expected="mean=13.67, std=1.61, range=4.2",
        hint=")",
    ),
    # ---------------------------------------------------------------- indentation
    Case(
        "indentation_loop_body",
        "indentation",
        "IndentationError",
        (
            md("# Basket by aisle"),
            code("""
                basket = [
                    {"item": "oats", "aisle": "dry", "price": 2.49},
                    {"item": "milk", "aisle": "chilled", "price": 1.15},
                    {"item": "rice", "aisle": "dry", "price": 3.10},
                    {"item": "yogurt", "aisle": "chilled", "price": 0.89},
                    {"item": "lentils", "aisle": "dry", "price": 1.75},
                ]
            """),
            broken(
                """
                totals = {}
                for entry in basket:
                totals[entry["aisle"]] = round(totals.get(entry["aisle"], 0) + entry["price"], 2)
                top_aisle = max(totals, key=totals.get)
                """,
                '\ntotals[entry["aisle"]] =',
                '\n    totals[entry["aisle"]] =',
            ),
            code('print(f"aisles {totals}; top {top_aisle}")'),
        ),
        expected="aisles {'dry': 7.34, 'chilled': 2.04}; top dry",
        hint="indent",
    ),
    Case(
        "indentation_with_unindent",
        "indentation",
        "IndentationError",
        (
            md("# Error rate in the service log"),
            broken(
                """
                errors = 0
                total = 0
                with open("app.log") as fh:
                    for line in fh:
                        if " ERROR " in line:
                            errors += 1
                      total += 1
                """,
                "      total += 1",
                "        total += 1",
            ),
            code("rate = errors / total"),
            code('print(f"{errors} errors in {total} lines ({rate:.0%})")'),
        ),
        expected="2 errors in 5 lines (40%)",
        hint="indent",
        data={
            "app.log": (
                "2024-04-01 10:00:01 INFO start\n"
                "2024-04-01 10:00:02 ERROR db timeout\n"
                "2024-04-01 10:00:05 INFO retry\n"
                "2024-04-01 10:00:09 ERROR db timeout\n"
                "2024-04-01 10:00:10 INFO ok\n"
            )
        },
    ),
    # ---------------------------------------------------------------- shape
    Case(
        "shape_matmul_row_weights",
        "shape",
        "ValueError",
        (
            md("# Supplier score\nStandardised criteria times a weight row."),
            code("import numpy as np"),
            code("""
                suppliers = ["Acme", "Borealis", "Cobalt", "Dynamo"]
                criteria = np.array(
                    [
                        [0.92, 14.0, 3.1],
                        [0.85, 9.0, 4.5],
                        [0.97, 21.0, 2.2],
                        [0.88, 12.0, 3.9],
                    ]
                )
                weights = np.array([[0.5, -0.2, 0.3]])
            """),
            broken(
                """
                z = (criteria - criteria.mean(axis=0)) / criteria.std(axis=0)
                scores = z @ weights
                best = int(np.argmax(scores))
                """,
                "z @ weights",
                "z @ weights.T",
            ),
            code('print(f"best {suppliers[best]} ({scores[best, 0]:.3f}); shape {scores.shape}")'),
        ),
        expected="best Acme (0.054); shape (4, 1)",
        hint=".T",
    ),
    Case(
        "shape_quarter_grid",
        "shape",
        "ValueError",
        (
            md("# Monthly bookings as a quarter x month grid"),
            code("""
                import numpy as np
                import pandas as pd
            """),
            code("""
                monthly = [31, 28, 40, 35, 39, 44, 52, 50, 41, 37, 30, 45]
                quarters = ["Q1", "Q2", "Q3", "Q4"]
            """),
            broken(
                """
                grid = pd.DataFrame(np.array(monthly), index=quarters, columns=["m1", "m2", "m3"])
                grid["total"] = grid.sum(axis=1)
                """,
                "np.array(monthly)",
                "np.array(monthly).reshape(4, 3)",
            ),
            code("""
                totals = grid["total"]
                print(f"busiest {totals.idxmax()} with {totals.max()}; totals {totals.tolist()}")
            """),
        ),
        expected="busiest Q3 with 143; totals [99, 118, 143, 112]",
        hint="reshape",
    ),
    # ---------------------------------------------------------------- keyword
    Case(
        "keyword_to_datetime_format",
        "keyword",
        "TypeError",
        (
            md("# Support tickets\nTimestamps are day-first."),
            code("import pandas as pd"),
            code("""
                tickets = pd.DataFrame(
                    {
                        "opened": ["03/04/2024 09:15", "03/04/2024 17:40", "05/04/2024 11:05", "12/04/2024 08:30"],
                        "closed": ["03/04/2024 12:45", "04/04/2024 10:10", "05/04/2024 11:50", "12/04/2024 16:00"],
                    }
                )
            """),
            broken(
                """
                for col in ["opened", "closed"]:
                    tickets[col] = pd.to_datetime(tickets[col], fromat="%d/%m/%Y %H:%M")
                tickets["hours"] = (tickets["closed"] - tickets["opened"]).dt.total_seconds() / 3600
                """,
                "fromat=",
                "format=",
            ),
            code("""
                first = tickets["opened"].min()
                print(f"from {first:%d %b}: mean {tickets['hours'].mean():.2f} h, max {tickets['hours'].max():.2f} h")
            """),
        ),
        expected="from 03 Apr: mean 7.06 h, max 16.50 h",
        hint="format",
    ),
    Case(
        "keyword_timedelta_hours",
        "keyword",
        "TypeError",
        (
            md("# Night-shift roster\nWhen does each shift end?"),
            code("from datetime import datetime, timedelta"),
            code("""
                shifts = [
                    ("Ana", "2024-03-08 22:00", 9),
                    ("Ben", "2024-03-09 06:30", 7.5),
                    ("Caro", "2024-03-09 14:00", 10),
                ]
            """),
            broken(
                """
                ends = {}
                for who, start, length in shifts:
                    begin = datetime.strptime(start, "%Y-%m-%d %H:%M")
                    ends[who] = begin + timedelta(hour=length)
                latest = max(ends, key=ends.get)
                """,
                "timedelta(hour=",
                "timedelta(hours=",
            ),
            code("""
                listing = ", ".join(f"{who} {end:%a %H:%M}" for who, end in ends.items())
                print(f"last out: {latest} ({listing})")
            """),
        ),
        expected="last out: Caro (Ana Sat 07:00, Ben Sat 14:00, Caro Sun 00:00)",
        hint="hours",
    ),
]


def to_notebook(case: Case) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for n, cell in enumerate(case.cells):
        cell_id = f"ho-{case.id.replace('_', '-')[:44]}-{n}"
        if isinstance(cell, Markdown):
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.text, id=cell_id))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(cell.text, id=cell_id))
    return nb


def entry(case: Case) -> dict[str, object]:
    (index,) = [n for n, cell in enumerate(case.cells) if isinstance(cell, Broken)]
    cell = case.cells[index]
    assert isinstance(cell, Broken)
    return {
        "id": case.id,
        "family": case.family,
        "error": case.error,
        "expected": case.expected,
        "hint": case.hint,
        "fixed_cell": {"index": index, "source": cell.repaired()},
    }


def validate(cases: list[Case]) -> None:
    """Static checks; ``fix_rate.py --corpus ... --verify`` runs the notebooks."""
    problems = []
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        problems.append("duplicate ids")
    for family in FAMILIES:
        n = sum(c.family == family for c in cases)
        if n != PER_FAMILY:
            problems.append(f"family {family}: {n} tasks, not {PER_FAMILY}")
    for c in cases:
        if c.family not in FAMILIES:
            problems.append(f"{c.id}: unknown family {c.family}")
        if not c.id.startswith(c.family + "_"):
            problems.append(f"{c.id}: id does not start with its family")
        runnable = [cell for cell in c.cells if not isinstance(cell, Markdown)]
        if not 3 <= len(runnable) <= 8:
            problems.append(f"{c.id}: {len(runnable)} code cells")
        if sum(isinstance(cell, Broken) for cell in c.cells) != 1:
            problems.append(f"{c.id}: not exactly one broken cell")
        if isinstance(runnable[-1], Broken) or "print(" not in runnable[-1].text:
            problems.append(f"{c.id}: the last code cell does not print")
        if not c.expected or not c.hint:
            problems.append(f"{c.id}: empty expected or hint")
    if problems:
        raise SystemExit("\n".join(problems))


def main() -> None:
    validate(CASES)
    for case in CASES:
        folder = ROOT / case.id
        folder.mkdir(exist_ok=True)
        nbformat.write(to_notebook(case), folder / "notebook.ipynb")
        for rel, text in case.data.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    manifest = [entry(c) for c in CASES]
    (ROOT / "tasks.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(manifest)} tasks in {len(FAMILIES)} families to {ROOT}")


if __name__ == "__main__":
    main()
