"""Write the fix-rate corpus: one folder per task (``notebook.ipynb`` and its data) and ``tasks.json``.

Each task is a small analysis with exactly one bug, in one cell, that raises when
the notebook runs top to bottom. The buggy cell is written as :class:`Bug`: its
source and the smallest edit that fixes it (``old`` replaced by ``new``, ``old``
found exactly once). The last code cell prints the result; ``expected`` appears in
that output only when the work was done right. ``benchmarks/fix_rate.py --verify``
checks all of this on a real kernel.

Usage: python benchmarks/fix_corpus/_make.py
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

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


def src(text: str) -> str:
    """A cell's source written as an indented triple-quoted string."""
    return textwrap.dedent(text).strip("\n")


@dataclasses.dataclass(frozen=True)
class Md:
    source: str


@dataclasses.dataclass(frozen=True)
class Code:
    source: str


@dataclasses.dataclass(frozen=True)
class Bug:
    """The one failing cell, and its fix: ``old`` (present exactly once) becomes ``new``."""

    source: str
    old: str
    new: str

    def fixed(self) -> str:
        count = self.source.count(self.old)
        if count != 1:
            msg = f"the fix's old text occurs {count} times in the cell, not once: {self.old!r}"
            raise ValueError(msg)
        return self.source.replace(self.old, self.new)


@dataclasses.dataclass(frozen=True)
class Task:
    id: str
    family: str
    error: str
    """The exception the buggy cell raises (checked by ``--verify``)."""
    cells: tuple[Md | Code | Bug, ...]
    expected: str
    hint: str
    files: dict[str, str] = dataclasses.field(default_factory=dict)


def c(text: str) -> Code:
    return Code(src(text))


def m(text: str) -> Md:
    return Md(src(text))


def bug(text: str, old: str, new: str) -> Bug:
    return Bug(src(text), old, new)


TASKS: list[Task] = [
    # -- name: a misspelled variable ------------------------------------------------
    Task(
        "name_weekly_sales",
        "name",
        "NameError",
        (
            m("# Weekly sales\nTotals and the best day of the week."),
            c("""
                sales = [120.5, 98.0, 143.25, 110.0, 87.75]
                days = ["Mon", "Tue", "Wed", "Thu", "Fri"]
            """),
            c("""
                total = sum(sales)
                average = total / len(sales)
            """),
            bug(
                """
                best_day = days[sales.index(max(sales))]
                share = max(sales) / totl
                """,
                "/ totl",
                "/ total",
            ),
            c('print(f"total {total:.2f}, average {average:.2f}, best {best_day} ({share:.1%})")'),
        ),
        expected="total 559.50, average 111.90, best Wed (25.6%)",
        hint="total",
    ),
    Task(
        "name_city_temps",
        "name",
        "NameError",
        (
            c("import pandas as pd"),
            c("""
                readings = pd.DataFrame(
                    {
                        "city": ["Oslo", "Lima", "Cairo", "Oslo", "Lima", "Cairo"],
                        "temp_c": [4.0, 19.5, 27.0, 6.5, 18.0, 29.5],
                    }
                )
                readings.head()
            """),
            c("""
                mean_by_city = readings.groupby("city")["temp_c"].mean()
                mean_by_city
            """),
            bug(
                """
                warmest = mean_by_cty.idxmax()
                spread = mean_by_city.max() - mean_by_city.min()
                """,
                "mean_by_cty.idxmax",
                "mean_by_city.idxmax",
            ),
            c('print(f"warmest city: {warmest}, spread {spread:.2f} C")'),
        ),
        expected="warmest city: Cairo, spread 23.00 C",
        hint="mean_by_city",
    ),
    Task(
        "name_word_counts",
        "name",
        "NameError",
        (
            m("Count the words of each paragraph."),
            c("""
                def word_count(text):
                    return len(text.split())
            """),
            c('paragraphs = ["the quick brown fox", "jumps over", "the lazy dog today"]'),
            bug("counts = [wordcount(p) for p in paragraphs]", "wordcount(p)", "word_count(p)"),
            c('print("words per paragraph:", counts, "total", sum(counts))'),
        ),
        expected="words per paragraph: [4, 2, 4] total 10",
        hint="word_count",
    ),
    # -- missing_import: a module alias used without its import ---------------------
    Task(
        "missing_import_zscores",
        "missing_import",
        "NameError",
        (
            c("import pandas as pd"),
            c("""
                scores = pd.Series([72, 85, 90, 66, 78], name="score")
                scores.describe()
            """),
            bug(
                """
                z = (scores - scores.mean()) / scores.std(ddof=0)
                clipped = np.clip(z, -1, 1)
                """,
                "z = (",
                "import numpy as np\n\nz = (",
            ),
            c('print(f"beyond one sd: {int((z.abs() > 1).sum())}, clipped mean {clipped.mean():.3f}")'),
        ),
        expected="beyond one sd: 2, clipped mean 0.009",
        hint="numpy",
    ),
    Task(
        "missing_import_orders_json",
        "missing_import",
        "NameError",
        (
            m("## Orders export\nThe shop exports its orders as JSON."),
            bug(
                """
                with open("orders.json") as f:
                    orders = json.load(f)
                len(orders)
                """,
                "with open",
                "import json\n\nwith open",
            ),
            c("""
                revenue = sum(o["qty"] * o["price"] for o in orders)
                skus = sorted({o["sku"] for o in orders})
            """),
            c('print(f"order revenue: {revenue:.2f} across {len(skus)} skus")'),
        ),
        expected="order revenue: 27.50 across 3 skus",
        hint="json",
        files={
            "orders.json": json.dumps(
                [
                    {"sku": "A1", "qty": 3, "price": 2.5},
                    {"sku": "B7", "qty": 1, "price": 10.0},
                    {"sku": "C3", "qty": 4, "price": 1.25},
                    {"sku": "A1", "qty": 2, "price": 2.5},
                ],
                indent=1,
            )
            + "\n"
        },
    ),
    Task(
        "missing_import_hospital_stays",
        "missing_import",
        "NameError",
        (
            m("# Length of stay\nAdmission and discharge dates, ISO formatted."),
            c("""
                visits = [
                    ("2024-01-05", "2024-01-19"),
                    ("2024-02-01", "2024-02-03"),
                    ("2024-02-10", "2024-03-02"),
                ]
            """),
            bug(
                """
                stays = [
                    (datetime.date.fromisoformat(out) - datetime.date.fromisoformat(adm)).days
                    for adm, out in visits
                ]
                """,
                "stays = [",
                "import datetime\n\nstays = [",
            ),
            c("long_stays = [s for s in stays if s > 7]"),
            c('print(f"longest stay: {max(stays)} days, mean {sum(stays) / len(stays):.1f}, long {len(long_stays)}")'),
        ),
        expected="longest stay: 21 days, mean 12.3, long 2",
        hint="datetime",
    ),
    # -- out_of_order: used before the (later) cell that defines it -----------------
    Task(
        "out_of_order_discount",
        "out_of_order",
        "NameError",
        (
            m("# Discounted prices"),
            c('prices = {"notebook": 4.0, "pen": 1.2, "stapler": 8.0, "folder": 2.4}'),
            bug(
                "discounted = {item: round(p * (1 - DISCOUNT), 2) for item, p in prices.items()}",
                "discounted = {",
                "DISCOUNT = 0.25\ndiscounted = {",
            ),
            m("## Parameters"),
            c("DISCOUNT = 0.25"),
            c('print(f"discounted total: {sum(discounted.values()):.2f}")'),
        ),
        expected="discounted total: 11.70",
        hint="DISCOUNT",
    ),
    Task(
        "out_of_order_clean_names",
        "out_of_order",
        "NameError",
        (
            c("""
                import pandas as pd

                contacts = pd.DataFrame(
                    {"name": ["ana", "BEN", "Cleo "], "email": ["ANA@X.ORG", "ben@x.org", " cleo@x.org"]}
                )
            """),
            bug(
                """
                contacts["name"] = contacts["name"].map(clean)
                contacts["email"] = contacts["email"].map(clean)
                """,
                'contacts["name"] = contacts["name"]',
                'def clean(value):\n    return value.strip().lower()\n\n\ncontacts["name"] = contacts["name"]',
            ),
            m("Helpers"),
            c("""
                def clean(value):
                    return value.strip().lower()
            """),
            c('print("cleaned:", ", ".join(contacts["name"]) + " | " + ", ".join(contacts["email"]))'),
        ),
        expected="cleaned: ana, ben, cleo | ana@x.org, ben@x.org, cleo@x.org",
        hint="clean",
    ),
    Task(
        "out_of_order_tariff",
        "out_of_order",
        "NameError",
        (
            m("Electricity bill for the first quarter."),
            c('usage_kwh = {"jan": 310, "feb": 280, "mar": 295}'),
            bug(
                'bill = {month: kwh * tariff["standard"] + tariff["fixed"] for month, kwh in usage_kwh.items()}',
                "bill = {",
                'tariff = {"standard": 0.28, "fixed": 12.0}\nbill = {',
            ),
            m("### Tariff"),
            c('tariff = {"standard": 0.28, "fixed": 12.0}'),
            c('print(f"quarter bill: {sum(bill.values()):.2f}")'),
        ),
        expected="quarter bill: 283.80",
        hint="tariff",
    ),
    # -- attribute: a misspelled attribute or method --------------------------------
    Task(
        "attribute_groupby",
        "attribute",
        "AttributeError",
        (
            c("import pandas as pd"),
            c("""
                orders = pd.DataFrame(
                    {"store": ["north", "south", "north", "east", "south", "east"], "units": [5, 3, 8, 2, 7, 4]}
                )
            """),
            bug('per_store = orders.groupbby("store")["units"].sum()', "groupbby", "groupby"),
            c('print("top store:", per_store.idxmax(), per_store.max())'),
        ),
        expected="top store: north 13",
        hint="groupby",
    ),
    Task(
        "attribute_str_upper",
        "attribute",
        "AttributeError",
        (
            m("Region codes become environment-variable labels."),
            c('codes = ["us-east", "eu-west", "ap-south"]'),
            bug('labels = [code.replace("-", "_").uper() for code in codes]', ".uper()", ".upper()"),
            c('print("labels:", "/".join(labels))'),
        ),
        expected="labels: US_EAST/EU_WEST/AP_SOUTH",
        hint="upper",
    ),
    Task(
        "attribute_np_arange",
        "attribute",
        "AttributeError",
        (
            c("import numpy as np"),
            bug(
                """
                x = np.arrange(0, 10, 2)
                y = x**2
                """,
                "np.arrange",
                "np.arange",
            ),
            c("area = np.trapezoid(y, x)"),
            c('print(f"area under y=x^2 on [0, 8]: {area:.1f}")'),
        ),
        expected="area under y=x^2 on [0, 8]: 176.0",
        hint="arange",
    ),
    # -- column: a pandas column wrong by case or a typo ----------------------------
    Task(
        "column_region_case",
        "column",
        "KeyError",
        (
            m("# Revenue by region"),
            c("""
                import pandas as pd

                sales = pd.read_csv("sales.csv")
            """),
            c("sales.head()"),
            bug('by_region = sales.groupby("region")["Revenue"].sum()', '"region"', '"Region"'),
            c('print(f"best region: {by_region.idxmax()} ({by_region.max()})")'),
        ),
        expected="best region: North (2000)",
        hint="Region",
        files={
            "sales.csv": src("""
                Region,Product,Revenue
                North,Widget,1200
                South,Widget,950
                North,Gadget,800
                East,Gadget,1100
                South,Gizmo,700
                East,Widget,400
            """)
            + "\n"
        },
    ),
    Task(
        "column_revenue_typo",
        "column",
        "KeyError",
        (
            c("import pandas as pd"),
            c("""
                quarters = pd.DataFrame(
                    {
                        "quarter": ["Q1", "Q2", "Q3", "Q4"],
                        "revenue": [120.0, 135.5, 128.25, 150.0],
                        "cost": [90.0, 101.0, 99.5, 104.0],
                    }
                )
            """),
            bug(
                'quarters["margin"] = (quarters["revnue"] - quarters["cost"]) / quarters["revenue"]',
                '"revnue"',
                '"revenue"',
            ),
            c("""
                best = quarters.loc[quarters["margin"].idxmax()]
                print(f"best margin: {best['quarter']} {best['margin']:.3f}")
            """),
        ),
        expected="best margin: Q4 0.307",
        hint="revenue",
    ),
    Task(
        "column_city_select",
        "column",
        "KeyError",
        (
            c("import pandas as pd"),
            c("""
                people = pd.DataFrame(
                    {
                        "name": ["Ava", "Ben", "Cy", "Di", "Eli", "Fay"],
                        "age": [34, 17, 22, 15, 41, 29],
                        "city": ["Lyon", "Nice", "Lyon", "Nice", "Nice", "Lyon"],
                    }
                )
            """),
            bug('adults = people[people["age"] >= 18][["name", "City"]]', '"City"', '"city"'),
            c('counts = adults["city"].value_counts()'),
            c('print("adults per city:", {city: int(n) for city, n in sorted(counts.items())})'),
        ),
        expected="adults per city: {'Lyon': 3, 'Nice': 1}",
        hint="city",
    ),
    # -- key: a dict key wrong by case or a typo -------------------------------------
    Task(
        "key_threshold_case",
        "key",
        "KeyError",
        (
            m("Pick the best-scoring items above a threshold."),
            c('config = {"Threshold": 0.75, "max_items": 3, "label": "high"}'),
            c('scores = {"a": 0.91, "b": 0.42, "c": 0.78, "d": 0.80, "e": 0.66}'),
            bug(
                """
                above = [k for k, v in scores.items() if v >= config["threshold"]]
                picked = sorted(above, key=lambda k: -scores[k])[: config["max_items"]]
                """,
                '"threshold"',
                '"Threshold"',
            ),
            c('print("picked:", picked)'),
        ),
        expected="picked: ['a', 'd', 'c']",
        hint="Threshold",
    ),
    Task(
        "key_unit_price",
        "key",
        "KeyError",
        (
            c("""
                inventory = {
                    "apples": {"count": 40, "unit_price": 0.5},
                    "pears": {"count": 25, "unit_price": 0.8},
                    "plums": {"count": 60, "unit_price": 0.3},
                }
            """),
            bug(
                'value = {fruit: item["count"] * item["unit_prce"] for fruit, item in inventory.items()}',
                '"unit_prce"',
                '"unit_price"',
            ),
            c("most_valuable = max(value, key=value.get)"),
            c('print(f"stock value: {sum(value.values()):.2f}, most valuable: {most_valuable}")'),
        ),
        expected="stock value: 58.00, most valuable: apples",
        hint="unit_price",
    ),
    Task(
        "key_station_json",
        "key",
        "KeyError",
        (
            m("# Weather station KX-12"),
            c("""
                import json

                with open("station.json") as f:
                    station = json.load(f)
                list(station["readings"])
            """),
            bug(
                """
                temps = station["readings"]["temprature"]
                humidity = station["readings"]["humidity"]
                """,
                '"temprature"',
                '"temperature"',
            ),
            c("mean_temp = sum(temps) / len(temps)"),
            c("print(f\"{station['station']}: mean temp {mean_temp:.2f}, max humidity {max(humidity):.2f}\")"),
        ),
        expected="KX-12: mean temp 12.75, max humidity 0.66",
        hint="temperature",
        files={
            "station.json": json.dumps(
                {
                    "station": "KX-12",
                    "readings": {"temperature": [12.0, 13.5, 11.5, 14.0], "humidity": [0.61, 0.58, 0.66, 0.55]},
                },
                indent=1,
            )
            + "\n"
        },
    ),
    # -- module: a misspelled module in an import -----------------------------------
    Task(
        "module_pandas",
        "module",
        "ModuleNotFoundError",
        (
            bug(
                """
                import numpy as np
                import pandsa as pd
                """,
                "pandsa",
                "pandas",
            ),
            c('df = pd.DataFrame({"x": np.arange(1, 6), "y": [2.0, 4.1, 5.9, 8.2, 9.8]})'),
            c('slope, intercept = np.polyfit(df["x"], df["y"], 1)'),
            c('print(f"fit: y = {slope:.2f} x + {intercept:.2f}")'),
        ),
        expected="fit: y = 1.97 x + 0.09",
        hint="pandas",
    ),
    Task(
        "module_collections",
        "module",
        "ModuleNotFoundError",
        (
            c('text = "the cat and the hat and the bat sat on the mat"'),
            bug(
                """
                from colections import Counter

                words = Counter(text.split())
                """,
                "colections",
                "collections",
            ),
            c('print("most common:", words.most_common(2))'),
        ),
        expected="most common: [('the', 4), ('and', 2)]",
        hint="collections",
    ),
    Task(
        "module_statistics",
        "module",
        "ModuleNotFoundError",
        (
            m("API latencies from one load test, in milliseconds."),
            c("latencies_ms = [120, 95, 310, 101, 99, 130, 102]"),
            bug("import statistcs as stats", "statistcs", "statistics"),
            c('summary = {"mean": stats.mean(latencies_ms), "median": stats.median(latencies_ms)}'),
            c("print(f\"median {summary['median']} ms, mean {summary['mean']:.1f} ms\")"),
        ),
        expected="median 102 ms, mean 136.7 ms",
        hint="statistics",
    ),
    # -- file: a file name wrong by a typo, case or extension -----------------------
    Task(
        "file_sales_underscore",
        "file",
        "FileNotFoundError",
        (
            c("import pandas as pd"),
            bug('sales = pd.read_csv("sales2024.csv")', "sales2024.csv", "sales_2024.csv"),
            c('monthly = sales.groupby("month", sort=False)["amount"].sum()'),
            c('print(f"best month: {monthly.idxmax()} ({monthly.max()}), year to date {monthly.sum()}")'),
        ),
        expected="best month: Mar (290), year to date 790",
        hint="sales_2024.csv",
        files={
            "sales_2024.csv": src("""
                month,region,amount
                Jan,A,100
                Jan,B,150
                Feb,A,120
                Feb,B,130
                Mar,A,90
                Mar,B,200
            """)
            + "\n"
        },
    ),
    Task(
        "file_customers_case",
        "file",
        "FileNotFoundError",
        (
            m("# Customers per country"),
            c("import csv"),
            bug(
                """
                with open("Customers.csv", newline="") as f:
                    rows = list(csv.DictReader(f))
                """,
                "Customers.csv",
                "customers.csv",
            ),
            c("""
                by_country = {}
                for row in rows:
                    by_country[row["country"]] = by_country.get(row["country"], 0) + 1
            """),
            c('print("customers by country:", sorted(by_country.items()))'),
        ),
        expected="customers by country: [('IE', 1), ('PT', 3), ('UK', 2)]",
        hint="customers.csv",
        files={
            "customers.csv": src("""
                id,name,country
                1,Ana,PT
                2,Ben,UK
                3,Chen,PT
                4,Dara,IE
                5,Eli,UK
                6,Fia,PT
            """)
            + "\n"
        },
    ),
    Task(
        "file_events_extension",
        "file",
        "FileNotFoundError",
        (
            c("import json"),
            bug(
                """
                with open("events.json") as f:
                    events = [json.loads(line) for line in f if line.strip()]
                """,
                '"events.json"',
                '"events.jsonl"',
            ),
            c("""
                from collections import Counter

                kinds = Counter(e["type"] for e in events)
            """),
            c('print("event types:", sorted(kinds.items()))'),
        ),
        expected="event types: [('buy', 1), ('click', 2), ('view', 3)]",
        hint="events.jsonl",
        files={
            "events.jsonl": "".join(
                json.dumps({"user": u, "type": t}) + "\n"
                for u, t in [("a", "view"), ("b", "view"), ("a", "click"), ("c", "view"), ("a", "buy"), ("b", "click")]
            )
        },
    ),
    # -- str_int: str + int ------------------------------------------------------------
    Task(
        "str_int_cart",
        "str_int",
        "TypeError",
        (
            c('cart = [("tea", 3), ("milk", 2), ("bread", 1)]'),
            c("total_items = sum(qty for _, qty in cart)"),
            bug('message = "Items in cart: " + total_items', "+ total_items", "+ str(total_items)"),
            c("print(message)"),
        ),
        expected="Items in cart: 6",
        hint="str(",
    ),
    Task(
        "str_int_fiscal_labels",
        "str_int",
        "TypeError",
        (
            m("Growth per fiscal year, for a chart's labels."),
            c("""
                years = [2021, 2022, 2023]
                growth = {2021: 0.031, 2022: 0.045, 2023: 0.027}
            """),
            bug(
                """
                labels = []
                for year in years:
                    labels.append("FY" + year + ": " + f"{growth[year]:.1%}")
                """,
                '"FY" + year',
                '"FY" + str(year)',
            ),
            c('print("; ".join(labels))'),
        ),
        expected="FY2021: 3.1%; FY2022: 4.5%; FY2023: 2.7%",
        hint="str(",
    ),
    Task(
        "str_int_headline",
        "str_int",
        "TypeError",
        (
            c("import pandas as pd"),
            c("""
                log = pd.DataFrame(
                    {
                        "user": ["u1", "u2", "u1", "u3", "u1"],
                        "action": ["login", "login", "buy", "login", "logout"],
                    }
                )
                n_users = log["user"].nunique()
            """),
            bug(
                'headline = str(len(log)) + " events from " + n_users + " users"',
                "+ n_users +",
                "+ str(n_users) +",
            ),
            c("print(headline)"),
        ),
        expected="5 events from 3 users",
        hint="str(",
    ),
    # -- sum_strings: sum() over strings ----------------------------------------------
    Task(
        "sum_strings_donations",
        "sum_strings",
        "TypeError",
        (
            m("# Donations\nThe amounts are in euros, with cents."),
            c("""
                import csv

                with open("donations.csv", newline="") as f:
                    rows = list(csv.DictReader(f))
            """),
            c('amounts = [row["amount"] for row in rows]'),
            bug("total = sum(amounts)", "sum(amounts)", "sum(float(a) for a in amounts)"),
            c('print(f"total donated: {total:.2f} from {len(rows)} donors")'),
        ),
        expected="total donated: 87.75 from 4 donors",
        hint="float",
        files={
            "donations.csv": src("""
                donor,amount
                Ana,25.50
                Ben,10
                Cy,40.25
                Di,12.00
            """)
            + "\n"
        },
    ),
    Task(
        "sum_strings_slug",
        "sum_strings",
        "TypeError",
        (
            m("Build the page's URL slug by gluing its parts together, in order."),
            c('parts = ["data", "-", "science", "-", "notebook"]'),
            bug("slug = sum(parts)", "sum(parts)", '"".join(parts)'),
            c('print(f"slug: {slug} ({len(slug)} characters)")'),
        ),
        expected="slug: data-science-notebook (21 characters)",
        hint="join",
    ),
    Task(
        "sum_strings_checksum",
        "sum_strings",
        "TypeError",
        (
            m("A line of integers from a sensor; its checksum is their sum modulo 97."),
            c('line = "4 8 15 16 23 42"'),
            c("tokens = line.split()"),
            bug("checksum = sum(tokens) % 97", "sum(tokens)", "sum(int(t) for t in tokens)"),
            c('print(f"checksum: {checksum} over {len(tokens)} values")'),
        ),
        expected="checksum: 11 over 6 values",
        hint="int",
    ),
    # -- none_mutating: using the None a mutating method returns ----------------------
    Task(
        "none_mutating_sort",
        "none_mutating",
        "TypeError",
        (
            c("response_times = [0.42, 0.31, 0.88, 0.27, 0.55, 0.61]"),
            bug(
                """
                ordered = response_times.sort()
                fastest, slowest = ordered[0], ordered[-1]
                """,
                "response_times.sort()",
                "sorted(response_times)",
            ),
            c("median = (ordered[2] + ordered[3]) / 2"),
            c('print(f"fastest {fastest}, slowest {slowest}, median {median:.3f}")'),
        ),
        expected="fastest 0.27, slowest 0.88, median 0.485",
        hint="sorted",
    ),
    Task(
        "none_mutating_append",
        "none_mutating",
        "TypeError",
        (
            m("A small job queue."),
            c('queue = ["job-1", "job-2", "job-3"]'),
            bug(
                """
                queue = queue.append("job-4")
                pending = len(queue)
                """,
                'queue = queue.append("job-4")',
                'queue.append("job-4")',
            ),
            c('print(f"pending jobs: {pending}, next: {queue[0]}, last: {queue[-1]}")'),
        ),
        expected="pending jobs: 4, next: job-1, last: job-4",
        hint="None",
    ),
    Task(
        "none_mutating_update",
        "none_mutating",
        "TypeError",
        (
            c('defaults = {"lr": 0.01, "epochs": 10, "batch": 32}'),
            c('overrides = {"epochs": 25, "batch": 64}'),
            bug(
                """
                config = defaults.copy().update(overrides)
                steps = config["epochs"] * (1000 // config["batch"])
                """,
                "config = defaults.copy().update(overrides)",
                "config = defaults.copy()\nconfig.update(overrides)",
            ),
            c("print(f\"lr={config['lr']} steps={steps} (defaults untouched: {defaults['epochs']})\")"),
        ),
        expected="lr=0.01 steps=375 (defaults untouched: 10)",
        hint="None",
    ),
    # -- off_by_one: an index one past the end ----------------------------------------
    Task(
        "off_by_one_invoice",
        "off_by_one",
        "IndexError",
        (
            m("# Invoice"),
            c("""
                prices = [2.5, 4.0, 1.25, 3.75]
                quantities = [4, 1, 8, 2]
            """),
            bug(
                """
                invoice = 0.0
                for i in range(len(prices) + 1):
                    invoice += prices[i] * quantities[i]
                """,
                "range(len(prices) + 1)",
                "range(len(prices))",
            ),
            c('print(f"invoice total: {invoice:.2f}")'),
        ),
        expected="invoice total: 31.50",
        hint="range(len(prices))",
    ),
    Task(
        "off_by_one_finish_split",
        "off_by_one",
        "IndexError",
        (
            m("Split times of a 20 km race, in minutes since the start."),
            c("""
                checkpoints = ["start", "km 5", "km 10", "km 15", "km 20"]
                splits_min = [0, 24, 49, 75, 98]
            """),
            # The minimal edit subtracts the one; splits_min[-1] is as right, and names no "len(...) - 1".
            bug("finish_time = splits_min[len(splits_min)]", "[len(splits_min)]", "[len(splits_min) - 1]"),
            c("""
                legs = [b - a for a, b in zip(splits_min, splits_min[1:])]
                slowest = checkpoints[legs.index(max(legs)) + 1]
                pace = finish_time / 20
            """),
            c('print(f"finish {finish_time} min, pace {pace:.2f} min/km, slowest leg ends at {slowest}")'),
        ),
        expected="finish 98 min, pace 4.90 min/km, slowest leg ends at km 15",
        hint="len(splits_min) - 1",
    ),
    Task(
        "off_by_one_ranking",
        "off_by_one",
        "IndexError",
        (
            c('scores = {"Max": 71, "Zoe": 94, "Ida": 88, "Tom": 65}'),
            c("names = sorted(scores, key=scores.get, reverse=True)"),
            m("A numbered ranking, starting at 1."),
            bug('lines = [f"{i}. {names[i]}" for i in range(1, len(names) + 1)]', "names[i]", "names[i - 1]"),
            c('print(" | ".join(lines))'),
        ),
        expected="1. Zoe | 2. Ida | 3. Max | 4. Tom",
        hint="i - 1",
    ),
    # -- brackets: an unclosed or extra bracket, a missing colon -------------------
    Task(
        "brackets_bmi_paren",
        "brackets",
        "SyntaxError",
        (
            c("""
                import numpy as np

                heights_m = np.array([1.62, 1.75, 1.81, 1.68, 1.70])
                weights_kg = np.array([58, 72, 90, 61, 65])
            """),
            bug("bmi = np.round(weights_kg / heights_m**2, 1", "**2, 1", "**2, 1)"),
            c("overweight = int((bmi >= 25).sum())"),
            c('print("BMI:", bmi.tolist(), "overweight:", overweight)'),
        ),
        expected="BMI: [22.1, 23.5, 27.5, 21.6, 22.5] overweight: 1",
        hint=")",
    ),
    Task(
        "brackets_extra_bracket",
        "brackets",
        "SyntaxError",
        (
            m("Row and column totals of a small grid."),
            c("grid = [[3, 1, 4], [1, 5, 9], [2, 6, 5]]"),
            bug(
                """
                row_totals = [sum(row) for row in grid]]
                col_totals = [sum(col) for col in zip(*grid)]
                """,
                "in grid]]",
                "in grid]",
            ),
            c('print("rows", row_totals, "cols", col_totals)'),
        ),
        expected="rows [8, 15, 13] cols [6, 12, 18]",
        hint="]",
    ),
    Task(
        "brackets_missing_colon",
        "brackets",
        "SyntaxError",
        (
            c('results = {"ana": 88, "bo": 72, "cy": 95, "dee": 64}'),
            c("PASS_MARK = 70"),
            bug(
                """
                passed = []
                for name, score in sorted(results.items())
                    if score >= PASS_MARK:
                        passed.append(name)
                """,
                "sorted(results.items())\n",
                "sorted(results.items()):\n",
            ),
            c('print("passed:", ", ".join(passed))'),
        ),
        expected="passed: ana, bo, cy",
        hint=":",
    ),
    # -- indentation ------------------------------------------------------------------
    Task(
        "indentation_function_body",
        "indentation",
        "IndentationError",
        (
            m("Turn raw weights into shares that add up to 1."),
            bug(
                """
                def normalize(values):
                total = sum(values)
                return [v / total for v in values]
                """,
                "total = sum(values)\nreturn",
                "    total = sum(values)\n    return",
            ),
            c("weights = [3, 1, 4, 2]"),
            c('print("normalized:", [round(x, 3) for x in normalize(weights)])'),
        ),
        expected="normalized: [0.3, 0.1, 0.4, 0.2]",
        hint="indent",
    ),
    Task(
        "indentation_unexpected",
        "indentation",
        "IndentationError",
        (
            c("rainfall_mm = [12.0, 0.0, 3.5, 22.5, 8.0, 0.0, 15.5]"),
            bug(
                """
                wet_days = sum(1 for r in rainfall_mm if r > 0)
                    dry_days = len(rainfall_mm) - wet_days
                """,
                "\n    dry_days",
                "\ndry_days",
            ),
            c("wettest = rainfall_mm.index(max(rainfall_mm)) + 1"),
            c('print(f"wet days {wet_days}, dry days {dry_days}, {sum(rainfall_mm):.1f} mm, wettest day {wettest}")'),
        ),
        expected="wet days 5, dry days 2, 61.5 mm, wettest day 4",
        hint="indent",
    ),
    Task(
        "indentation_unindent",
        "indentation",
        "IndentationError",
        (
            m("# Letter grades"),
            c("scores = [93, 78, 61, 88, 99]"),
            bug(
                """
                def grade(score):
                    if score >= 90:
                        return "A"
                    elif score >= 75:
                        return "B"
                  return "C"
                """,
                '\n  return "C"',
                '\n    return "C"',
            ),
            c('print("grades:", "".join(grade(s) for s in scores))'),
        ),
        expected="grades: ABCBA",
        hint="indent",
    ),
    # -- shape: a numpy shape mismatch fixed by a transpose or a reshape ---------------
    Task(
        "shape_price_lists",
        "shape",
        "ValueError",
        (
            c("import numpy as np"),
            c("""
                # units bought: 2 customers x 3 products
                units = np.array([[2, 0, 1], [1, 3, 0]])
                # 4 price lists x 3 products
                price_lists = np.array([[1.0, 2.0, 3.0], [1.5, 2.0, 2.5], [0.5, 1.0, 4.0], [2.0, 2.0, 2.0]])
            """),
            m("What each customer would pay under each price list (customers x price lists)."),
            bug("cost = units @ price_lists", "price_lists", "price_lists.T"),
            c("cheapest = cost.argmin(axis=1)"),
            c('print("cost:", cost.tolist(), "cheapest list per customer:", cheapest.tolist())'),
        ),
        expected="cost: [[5.0, 5.5, 5.0, 6.0], [7.0, 7.5, 3.5, 8.0]] cheapest list per customer: [0, 2]",
        hint=".T",
    ),
    Task(
        "shape_design_matrix",
        "shape",
        "ValueError",
        (
            m("# A straight-line fit by least squares"),
            c("""
                import numpy as np

                x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
                y = np.array([3.1, 4.9, 7.2, 8.8, 11.0])
            """),
            bug("X = np.hstack([np.ones((len(x), 1)), x])", ", x])", ", x.reshape(-1, 1)])"),
            c("coef, *_ = np.linalg.lstsq(X, y, rcond=None)"),
            c('print(f"intercept {coef[0]:.2f}, slope {coef[1]:.2f}")'),
        ),
        expected="intercept 1.09, slope 1.97",
        hint="reshape",
    ),
    Task(
        "shape_portfolio",
        "shape",
        "ValueError",
        (
            c("""
                import numpy as np

                # daily returns: 5 days x 3 assets
                returns = np.array(
                    [
                        [0.010, -0.020, 0.005],
                        [0.003, 0.010, -0.004],
                        [-0.012, 0.004, 0.008],
                        [0.007, 0.001, 0.002],
                        [0.000, -0.006, 0.010],
                    ]
                )
            """),
            c("weights = np.array([[0.5, 0.3, 0.2]])  # one portfolio, as a row"),
            bug("daily = np.dot(weights, returns)", "returns)", "returns.T)"),
            c("growth = np.prod(1 + daily.ravel())"),
            c('print(f"portfolio growth over {daily.size} days: {growth:.5f}")'),
        ),
        expected="portfolio growth over 5 days: 1.00489",
        hint=".T",
    ),
    # -- keyword: a wrong keyword argument -----------------------------------------------
    Task(
        "keyword_sorted_reverse",
        "keyword",
        "TypeError",
        (
            m("Chess ratings of the club's players."),
            c('players = {"kim": 1840, "lee": 2015, "park": 1932, "cho": 1777}'),
            bug("ranking = sorted(players, key=players.get, reversed=True)", "reversed=True", "reverse=True"),
            c('print("top two:", ranking[:2])'),
        ),
        expected="top two: ['lee', 'park']",
        hint="reverse=True",
    ),
    Task(
        "keyword_sort_values",
        "keyword",
        "TypeError",
        (
            c("import pandas as pd"),
            c("""
                teams = pd.DataFrame(
                    {"team": ["red", "blue", "green", "gold"], "points": [31, 44, 27, 44], "goals": [40, 52, 35, 49]}
                )
            """),
            bug(
                'table = teams.sort_values(["points", "goals"], ascend=False).reset_index(drop=True)',
                "ascend=False",
                "ascending=False",
            ),
            c('print("leader:", table.loc[0, "team"], "| last:", table.loc[len(table) - 1, "team"])'),
        ),
        expected="leader: blue | last: green",
        hint="ascending",
    ),
    Task(
        "keyword_moving_average",
        "keyword",
        "TypeError",
        (
            c("""
                def moving_average(values, window=3):
                    \"\"\"Mean of each run of `window` consecutive values.\"\"\"
                    return [sum(values[i - window + 1 : i + 1]) / window for i in range(window - 1, len(values))]
            """),
            c("visitors = [120, 135, 150, 110, 160, 175, 140]"),
            bug("smooth = moving_average(visitors, size=4)", "size=4", "window=4"),
            c('print("4-day averages:", [round(v, 2) for v in smooth])'),
        ),
        expected="4-day averages: [128.75, 138.75, 148.75, 146.25]",
        hint="window",
    ),
]


def notebook(task: Task) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(task.cells):
        cell_id = f"{task.id.replace('_', '-')[:50]}-{i}"  # stable ids: regenerating changes nothing
        if isinstance(cell, Md):
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.source, id=cell_id))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(cell.source, id=cell_id))
    return nb


def manifest_entry(task: Task) -> dict[str, object]:
    (index,) = [i for i, cell in enumerate(task.cells) if isinstance(cell, Bug)]
    buggy = task.cells[index]
    assert isinstance(buggy, Bug)
    return {
        "id": task.id,
        "family": task.family,
        "error": task.error,
        "expected": task.expected,
        "hint": task.hint,
        "fixed_cell": {"index": index, "source": buggy.fixed()},
    }


def check(tasks: list[Task]) -> None:
    """What can be checked without a kernel (``fix_rate.py --verify`` checks the rest)."""
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        msg = "task ids are not unique"
        raise ValueError(msg)
    for family in FAMILIES:
        n = sum(t.family == family for t in tasks)
        if n < 3:
            msg = f"family {family} has {n} tasks, fewer than 3"
            raise ValueError(msg)
    for t in tasks:
        if t.family not in FAMILIES:
            msg = f"{t.id}: unknown family {t.family}"
            raise ValueError(msg)
        code = [cell for cell in t.cells if not isinstance(cell, Md)]
        if not 3 <= len(code) <= 8:
            msg = f"{t.id}: {len(code)} code cells, not 3 to 8"
            raise ValueError(msg)
        if sum(isinstance(cell, Bug) for cell in t.cells) != 1:
            msg = f"{t.id}: not exactly one buggy cell"
            raise ValueError(msg)
        if "print(" not in code[-1].source:
            msg = f"{t.id}: the last code cell does not print"
            raise ValueError(msg)


def main() -> None:
    check(TASKS)
    for task in TASKS:
        folder = HERE / task.id
        folder.mkdir(exist_ok=True)
        nbformat.write(notebook(task), folder / "notebook.ipynb")
        for name, text in task.files.items():
            (folder / name).write_text(text)
    entries = [manifest_entry(t) for t in TASKS]
    (HERE / "tasks.json").write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} tasks in {len(FAMILIES)} families to {HERE}")


if __name__ == "__main__":
    main()
