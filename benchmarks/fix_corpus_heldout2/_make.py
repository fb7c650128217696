"""Write the second held-out fix-rate corpus: one folder per task and ``tasks.json``.

For ``benchmarks/fix_rate.py --corpus benchmarks/fix_corpus_heldout2``. Written
from scratch, without reading the product's analyzer or the other corpora's bugs,
so that its figure is an honest measure on bugs the product was never tuned on.
Same manifest schema and families as the other corpora: 32 tasks, two per family.

Each task is a small analysis. Exactly one code cell is a :class:`Bug`: its source
and the single edit that repairs it (``wrong``, present exactly once, becomes
``right``). Run top to bottom, the notebook raises ``error`` in that cell; repaired,
it runs clean and only its last code cell prints ``expected``. ``hint`` is the
literal that a correct diagnosis has to name. Data files live next to the notebook,
often in subfolders.

Usage: python benchmarks/fix_corpus_heldout2/_make.py
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
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
TASKS_PER_FAMILY = 2


def clean(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


@dataclass(frozen=True)
class Md:
    """A markdown cell."""

    text: str


@dataclass(frozen=True)
class Bug:
    """The one failing code cell; swapping ``wrong`` (found once) for ``right`` repairs it."""

    source: str
    wrong: str
    right: str

    def fixed(self) -> str:
        hits = self.source.count(self.wrong)
        if hits != 1:
            msg = f"{self.wrong!r} is in the buggy cell {hits} times, not once"
            raise ValueError(msg)
        return self.source.replace(self.wrong, self.right)


@dataclass(frozen=True)
class Task:
    id: str
    family: str
    error: str
    expected: str
    hint: str
    cells: list[Md | Bug | str]
    files: dict[str, str] = field(default_factory=dict)


def md(text: str) -> Md:
    return Md(clean(text))


def bug(source: str, wrong: str, right: str) -> Bug:
    return Bug(clean(source), wrong, right)


def c(source: str) -> str:
    return clean(source)


TASKS: list[Task] = []


def task(
    id: str,
    family: str,
    error: str,
    *cells: Md | Bug | str,
    expected: str,
    hint: str,
    files: dict[str, str] | None = None,
) -> None:
    files = {path: clean(text) + "\n" for path, text in (files or {}).items()}
    TASKS.append(Task(id, family, error, expected, hint, list(cells), files))


# ================================================================== name

task(
    "name_site_visits_wrong_case",
    "name",
    "NameError",
    md("# Site traffic\nDaily visits for three weeks; growth from one ISO week to the next."),
    c("import pandas as pd"),
    c("""
        visits = pd.DataFrame({
            "day": pd.date_range("2024-05-06", periods=21, freq="D"),
            "visits": [120, 135, 128, 140, 152, 98, 87,
                       131, 142, 139, 150, 161, 104, 93,
                       125, 138, 133, 147, 170, 110, 99],
        })
        visits.tail(3)
    """),
    bug(
        """
        def week_over_week(frame):
            weekly = frame.groupby(frame["day"].dt.isocalendar().week)["visits"].sum()
            return (Weekly.pct_change().dropna() * 100).round(1)


        growth = week_over_week(visits)
        """,
        "(Weekly.pct_change()",
        "(weekly.pct_change()",
    ),
    c("""print(f"week-over-week growth in %: {dict(zip(growth.index.tolist(), growth.tolist()))}")"""),
    expected="week-over-week growth in %: {20: 7.0, 21: 0.2}",
    hint="weekly",
)

task(
    "name_segment_revenue_cut_short",
    "name",
    "NameError",
    md("# Revenue per customer segment\nOrders joined to the customer table."),
    c("import pandas as pd"),
    c("""
        customers = pd.read_csv("tables/customers.csv")
        orders = pd.read_csv("tables/orders.csv")
        print(len(customers), "customers,", len(orders), "orders")
    """),
    bug(
        """
        enriched = orders.merge(cust, on="customer_id", how="left")
        by_segment = enriched.groupby("segment")["amount"].sum().sort_values(ascending=False)
        """,
        "merge(cust,",
        "merge(customers,",
    ),
    c("""print("revenue by segment:", by_segment.to_dict())"""),
    expected="revenue by segment: {'wholesale': 1250, 'online': 385, 'retail': 255}",
    hint="customers",
    files={
        "tables/customers.csv": """
            customer_id,name,segment
            C01,Alba,retail
            C02,Bruno,wholesale
            C03,Chen,retail
            C04,Dara,online
            C05,Emil,online
        """,
        "tables/orders.csv": """
            order_id,customer_id,amount
            1001,C01,120
            1002,C02,940
            1003,C03,75
            1004,C01,60
            1005,C04,210
            1006,C05,130
            1007,C02,310
            1008,C04,45
        """,
    },
)

# ================================================================== missing_import

task(
    "missing_import_numpy_where",
    "missing_import",
    "NameError",
    md("# Hot sensors\nFlag readings above 30 °C and count them per sensor."),
    c("import pandas as pd"),
    c("""
        readings = pd.DataFrame({
            "sensor": ["s1", "s2", "s3"] * 3,
            "temp_c": [28.5, 31.2, 29.9, 30.4, 33.1, 27.8, 31.7, 29.0, 30.1],
        })
        readings.describe()
    """),
    bug(
        """
        readings["status"] = np.where(readings["temp_c"] > 30, "hot", "ok")
        hot = readings.groupby("sensor")["status"].apply(lambda s: int((s == "hot").sum()))
        """,
        'readings["status"] = np.where',
        'import numpy as np\n\nreadings["status"] = np.where',
    ),
    c("""print("hot readings per sensor:", hot.to_dict())"""),
    expected="hot readings per sensor: {'s1': 2, 's2': 2, 's3': 1}",
    hint="numpy",
)

task(
    "missing_import_defaultdict_sessions",
    "missing_import",
    "NameError",
    md("# Session length\nMinutes between each user's first and last event."),
    c("""
        import json
        from datetime import datetime
        from pathlib import Path
    """),
    c("""
        events = json.loads(Path("logs/events.json").read_text())
        len(events)
    """),
    bug(
        """
        stamps = defaultdict(list)
        for ev in events:
            stamps[ev["user"]].append(datetime.fromisoformat(ev["at"]))
        """,
        "stamps = defaultdict(list)",
        "from collections import defaultdict\n\nstamps = defaultdict(list)",
    ),
    c("""
        spans = {
            user: int((max(times) - min(times)).total_seconds() // 60)
            for user, times in sorted(stamps.items())
        }
        print(f"session minutes: {spans}")
    """),
    expected="session minutes: {'ines': 15, 'mila': 29, 'tomas': 30}",
    hint="collections",
    files={
        "logs/events.json": """
            [
              {"user": "mila", "action": "login", "at": "2024-06-01T08:02:00"},
              {"user": "mila", "action": "view", "at": "2024-06-01T08:05:00"},
              {"user": "tomas", "action": "login", "at": "2024-06-01T08:10:00"},
              {"user": "tomas", "action": "view", "at": "2024-06-01T08:12:00"},
              {"user": "mila", "action": "export", "at": "2024-06-01T08:31:00"},
              {"user": "tomas", "action": "logout", "at": "2024-06-01T08:40:00"},
              {"user": "ines", "action": "login", "at": "2024-06-01T09:00:00"},
              {"user": "ines", "action": "view", "at": "2024-06-01T09:15:00"}
            ]
        """,
    },
)

# ================================================================== out_of_order

SLUGIFY = """def slugify(text):
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)"""

task(
    "out_of_order_slugify_defined_below",
    "out_of_order",
    "NameError",
    md("# URL slugs for the course catalogue"),
    c("import re"),
    c("""
        raw_titles = [
            "  Cleaning Messy CSVs ",
            "Pandas: GroupBy in Depth",
            "Plotting 101 -- Quick Wins",
            "NumPy & Broadcasting",
        ]
    """),
    bug(
        """
        slugs = [slugify(t) for t in raw_titles]
        assert len(set(slugs)) == len(slugs)
        """,
        "slugs = [slugify(t)",
        SLUGIFY + "\n\n\nslugs = [slugify(t)",
    ),
    md("## Helpers"),
    c(SLUGIFY),
    c("""print(" | ".join(slugs))"""),
    expected="cleaning-messy-csvs | pandas-groupby-in-depth | plotting-101-quick-wins | numpy-broadcasting",
    hint="slugify",
)

task(
    "out_of_order_vat_table_below",
    "out_of_order",
    "NameError",
    md("# Gross invoice totals per country"),
    c("import pandas as pd"),
    c("""
        invoices = pd.DataFrame({
            "invoice": ["A-1", "A-2", "A-3", "A-4", "A-5"],
            "country": ["DE", "FR", "IT", "DE", "FR"],
            "net": [100.0, 250.0, 80.0, 40.0, 120.0],
        })
    """),
    bug(
        """
        invoices["gross"] = (invoices["net"] * (1 + invoices["country"].map(VAT))).round(2)
        invoices.head()
        """,
        'invoices["gross"] =',
        'VAT = {"DE": 0.19, "FR": 0.20, "IT": 0.22}\ninvoices["gross"] =',
    ),
    md("## Parameters"),
    c("""VAT = {"DE": 0.19, "FR": 0.20, "IT": 0.22}  # standard rates"""),
    c("""
        totals = invoices.groupby("country")["gross"].sum().round(2)
        print("gross by country:", totals.to_dict())
    """),
    expected="gross by country: {'DE': 166.6, 'FR': 444.0, 'IT': 97.6}",
    hint="VAT",
)

# ================================================================== attribute

task(
    "attribute_dt_week_removed",
    "attribute",
    "AttributeError",
    md("# Bike rides per ISO week"),
    c("import pandas as pd"),
    c("""
        rides = pd.read_csv("exports/rides.csv", parse_dates=["started_at"])
        rides.dtypes
    """),
    bug(
        """
        rides["week"] = rides["started_at"].dt.week
        per_week = rides.groupby("week")["minutes"].agg(["count", "sum"])
        """,
        ".dt.week\n",
        ".dt.isocalendar().week\n",
    ),
    c("""print("rides per week:", {int(week): row for week, row in per_week.to_dict("index").items()})"""),
    expected=("rides per week: {9: {'count': 3, 'sum': 45}, 10: {'count': 2, 'sum': 44}, 11: {'count': 4, 'sum': 89}}"),
    hint="isocalendar",
    files={
        "exports/rides.csv": """
            ride_id,started_at,minutes
            r1,2024-02-26 08:10,12
            r2,2024-02-28 17:45,25
            r3,2024-03-01 07:55,8
            r4,2024-03-04 12:30,30
            r5,2024-03-07 18:05,14
            r6,2024-03-11 08:20,9
            r7,2024-03-12 09:00,22
            r8,2024-03-15 16:40,17
            r9,2024-03-17 11:15,41
        """,
    },
)

task(
    "attribute_path_extension",
    "attribute",
    "AttributeError",
    md("# Monthly expense exports\nEvery CSV dropped into `inbox/`, nothing else."),
    c("""
        import csv
        from pathlib import Path

        inbox = Path("inbox")
    """),
    bug(
        """
        csv_files = sorted(p for p in inbox.iterdir() if p.extension == ".csv")
        """,
        "p.extension ==",
        "p.suffix ==",
    ),
    c("""
        rows = 0
        amount = 0.0
        for f in csv_files:
            with f.open(newline="") as fh:
                for rec in csv.DictReader(fh):
                    rows += 1
                    amount += float(rec["amount"])
    """),
    c("""
        names = ", ".join(p.stem for p in csv_files)
        print(f"{len(csv_files)} files ({names}), {rows} rows, total {amount:.2f}")
    """),
    expected="3 files (feb, jan, mar), 7 rows, total 412.35",
    hint="suffix",
    files={
        "inbox/jan.csv": """
            date,amount
            2024-01-04,45.50
            2024-01-19,120.00
        """,
        "inbox/feb.csv": """
            date,amount
            2024-02-02,12.25
            2024-02-14,88.10
            2024-02-27,30.00
        """,
        "inbox/mar.csv": """
            date,amount
            2024-03-09,99.90
            2024-03-30,16.60
        """,
        "inbox/readme.txt": """
            Drop the bank's monthly exports here, one CSV per month.
        """,
    },
)

# ================================================================== column

task(
    "column_apply_unit_price",
    "column",
    "KeyError",
    md("# Basket total\nLine totals after each line's discount."),
    c("import pandas as pd"),
    c("""
        basket = pd.read_csv("shop/basket.csv")
        basket.head()
    """),
    bug(
        """
        def line_total(row):
            gross = row["price"] * row["qty"]
            return round(gross * (1 - row["discount_pct"] / 100), 2)


        basket["total"] = basket.apply(line_total, axis=1)
        """,
        'row["price"]',
        'row["unit_price"]',
    ),
    c("""
        top = basket.loc[basket["total"].idxmax(), "item"]
        print(f"basket total: {basket['total'].sum():.2f}; biggest line: {top}")
    """),
    expected="basket total: 58.75; biggest line: olive oil",
    hint="unit_price",
    files={
        "shop/basket.csv": """
            item,unit_price,qty,discount_pct
            coffee beans,8.90,2,10
            olive oil,12.50,2,0
            oat milk,1.95,6,10
            dark chocolate,2.40,3,0
        """,
    },
)

task(
    "column_signup_email_domain",
    "column",
    "KeyError",
    md("# Where do sign-ups come from?\nCount e-mail domains."),
    c("import pandas as pd"),
    c("""
        signups = pd.read_csv("crm/signups.csv", parse_dates=["signup_date"])
        signups.shape
    """),
    bug(
        """
        signups["domain"] = signups["email"].str.split("@").str[1].str.lower()
        domains = signups["domain"].value_counts()
        """,
        'signups["email"]',
        'signups["contact_email"]',
    ),
    c("""print("top domains:", domains.head(3).to_dict())"""),
    expected="top domains: {'gmail.com': 4, 'example.org': 3, 'uni.edu': 2}",
    hint="contact_email",
    files={
        "crm/signups.csv": """
            signup_date,contact_email,plan
            2024-04-01,ana@gmail.com,free
            2024-04-01,b.ross@Example.org,pro
            2024-04-02,chris@uni.edu,free
            2024-04-03,dee@GMAIL.com,free
            2024-04-03,eli@example.org,team
            2024-04-04,fay@gmail.com,pro
            2024-04-05,gus@uni.edu,free
            2024-04-05,hal@example.org,pro
            2024-04-06,ivy@gmail.com,free
            2024-04-07,jo@proton.me,free
        """,
    },
)

# ================================================================== key

task(
    "key_api_camelcase_user",
    "key",
    "KeyError",
    md("# Most talkative commenters\nWords written per user, from an API dump."),
    c("""
        import json
        from collections import Counter
    """),
    c("""
        with open("api/comments.json") as fh:
            comments = json.load(fh)
        comments[0]
    """),
    bug(
        """
        words = Counter()
        for comment in comments:
            words[comment["user_id"]] += len(comment["body"].split())
        """,
        'comment["user_id"]',
        'comment["userId"]',
    ),
    c("""print("most words:", words.most_common(2))"""),
    expected="most words: [(3, 14), (1, 9)]",
    hint="userId",
    files={
        "api/comments.json": """
            [
              {"id": 1, "userId": 1, "body": "great write up thanks"},
              {"id": 2, "userId": 2, "body": "agreed"},
              {"id": 3, "userId": 3, "body": "I ran the same numbers and got a different median"},
              {"id": 4, "userId": 1, "body": "could you share the notebook"},
              {"id": 5, "userId": 3, "body": "never mind, found it"},
              {"id": 6, "userId": 2, "body": "nice chart"}
            ]
        """,
    },
)

task(
    "key_alert_limits_in_fstring",
    "key",
    "KeyError",
    md("# Resource alerts\nSamples above the limits configured in `conf/alerts.json`."),
    c("""
        import json

        import pandas as pd
    """),
    c("""
        config = json.load(open("conf/alerts.json"))
        samples = pd.DataFrame({
            "ts": ["10:00", "10:05", "10:10", "10:15", "10:20", "10:25"],
            "cpu": [42, 88, 61, 79, 91, 55],
            "mem": [70, 74, 93, 81, 86, 95],
        })
    """),
    bug(
        """
        limits = config["limits"]
        rule = f"cpu > {limits['cpu_pct']} or mem > {limits['memory_pct']}"
        over = samples.query(rule)
        """,
        "limits['memory_pct']",
        "limits['mem_pct']",
    ),
    c("""print(f"{len(over)} of {len(samples)} samples over limits at {over['ts'].tolist()}")"""),
    expected="4 of 6 samples over limits at ['10:05', '10:10', '10:20', '10:25']",
    hint="mem_pct",
    files={
        "conf/alerts.json": """
            {"window_min": 5, "limits": {"cpu_pct": 85, "mem_pct": 90, "disk_pct": 80}}
        """,
    },
)

# ================================================================== module

task(
    "module_pandas_api_types_submodule",
    "module",
    "ModuleNotFoundError",
    md("# Survey: averages of the numeric answers"),
    c("import pandas as pd"),
    c("""
        survey = pd.DataFrame({
            "respondent": ["r1", "r2", "r3", "r4"],
            "age": [34, 27, 45, 52],
            "city": ["Lyon", "Porto", "Lyon", "Graz"],
            "score": [7.5, 8.0, 6.5, 9.0],
            "income_k": [41, 38, 57, 63],
        })
    """),
    bug(
        """
        from pandas.api.type import is_numeric_dtype

        numeric = [col for col in survey.columns if is_numeric_dtype(survey[col])]
        """,
        "pandas.api.type import",
        "pandas.api.types import",
    ),
    c("""print(numeric, survey[numeric].mean().round(2).to_dict())"""),
    expected="['age', 'score', 'income_k'] {'age': 39.5, 'score': 7.75, 'income_k': 49.75}",
    hint="pandas.api.types",
)

task(
    "module_statistics_cut_short",
    "module",
    "ModuleNotFoundError",
    md("# API latency\nMedian, spread and the slow calls."),
    c("""
        latencies_ms = [112, 98, 105, 430, 101, 99, 120, 97, 510, 103, 108, 95]
        len(latencies_ms)
    """),
    bug(
        """
        from statistic import median, pstdev

        mid = median(latencies_ms)
        spread = pstdev(latencies_ms)
        """,
        "from statistic import",
        "from statistics import",
    ),
    c("""
        slow = [ms for ms in latencies_ms if ms > mid + 2 * spread]
        print(f"median {mid} ms, spread {spread:.1f} ms, slow: {slow}")
    """),
    expected="median 104.0 ms, spread 137.6 ms, slow: [430, 510]",
    hint="statistics",
)

# ================================================================== file

task(
    "file_tab_separated_extension",
    "file",
    "FileNotFoundError",
    md("# Station means\nThe logger writes tab-separated files to `data/`."),
    c("import pandas as pd"),
    bug(
        """
        meas = pd.read_csv("data/measurements.csv", sep="\\t", parse_dates=["taken"])
        meas.head()
        """,
        "measurements.csv",
        "measurements.tsv",
    ),
    c("""
        daily = meas.groupby(["station", meas["taken"].dt.date])["pm25"].mean().round(1)
    """),
    c("""print(daily.groupby(level="station").max().to_dict())"""),
    expected="{'north': 18.4, 'south': 11.5}",
    hint="measurements.tsv",
    files={
        "data/measurements.tsv": """
            station\ttaken\tpm25
            north\t2024-01-10 06:00\t14.2
            north\t2024-01-10 18:00\t18.6
            south\t2024-01-10 06:00\t9.1
            south\t2024-01-10 18:00\t11.3
            north\t2024-01-11 06:00\t21.0
            north\t2024-01-11 18:00\t15.8
            south\t2024-01-11 06:00\t12.4
            south\t2024-01-11 18:00\t10.6
        """,
    },
)

task(
    "file_json_dated_name",
    "file",
    "FileNotFoundError",
    md("# Reorder list\nItems under their reorder point, rounded up to whole cases."),
    c("""
        import json
        import math
        from pathlib import Path
    """),
    bug(
        """
        stock = json.loads((Path("inputs") / "inventory_2024_06.json").read_text())
        len(stock)
        """,
        '"inventory_2024_06.json"',
        '"inventory_2024-06.json"',
    ),
    c("""
        to_order = {}
        for item in stock:
            short = item["reorder_at"] - item["on_hand"]
            if short > 0:
                to_order[item["sku"]] = math.ceil(short / item["case_size"]) * item["case_size"]
    """),
    c("""print(f"order: {to_order}")"""),
    expected="order: {'TAPE-50': 24, 'LABEL-A4': 10}",
    hint="inventory_2024-06.json",
    files={
        "inputs/inventory_2024-06.json": """
            [
              {"sku": "BOX-S", "on_hand": 140, "reorder_at": 100, "case_size": 25},
              {"sku": "TAPE-50", "on_hand": 7, "reorder_at": 20, "case_size": 12},
              {"sku": "LABEL-A4", "on_hand": 3, "reorder_at": 8, "case_size": 10},
              {"sku": "BUBBLE-1M", "on_hand": 30, "reorder_at": 30, "case_size": 5}
            ]
        """,
    },
)

# ================================================================== str_int

task(
    "str_int_counter_labels",
    "str_int",
    "TypeError",
    md("# Tag cloud labels\nThe three most used tags with their counts."),
    c("from collections import Counter"),
    c("""
        posts = [
            {"title": "Intro", "tags": ["python", "pandas"]},
            {"title": "Joins", "tags": ["pandas", "sql"]},
            {"title": "Plots", "tags": ["python", "matplotlib", "pandas"]},
            {"title": "Speed", "tags": ["numpy", "python", "pandas"]},
            {"title": "Dates", "tags": ["pandas", "sql"]},
        ]
    """),
    bug(
        """
        tally = Counter(tag for post in posts for tag in post["tags"])
        labels = [tag + " (" + n + ")" for tag, n in tally.most_common(3)]
        """,
        '" (" + n + ")"',
        '" (" + str(n) + ")"',
    ),
    c("""print(", ".join(labels))"""),
    expected="pandas (5), python (3), sql (2)",
    hint="str(",
)

task(
    "str_int_apply_station_label",
    "str_int",
    "TypeError",
    md("# Station labels\n`city-year` for each weather station, oldest first."),
    c("import pandas as pd"),
    c("""
        stations = pd.DataFrame({
            "code": ["W01", "W02", "W03", "W04"],
            "city": ["Bergen", "Cork", "Brest", "Split"],
            "opened": [1998, 1975, 2004, 1987],
        })
    """),
    bug(
        """
        stations["label"] = stations.apply(lambda r: r["city"] + "-" + r["opened"], axis=1)
        """,
        '+ r["opened"]',
        '+ str(r["opened"])',
    ),
    c("""print(stations.sort_values("opened")["label"].tolist())"""),
    expected="['Cork-1975', 'Split-1987', 'Bergen-1998', 'Brest-2004']",
    hint="str(",
)

# ================================================================== sum_strings

task(
    "sum_strings_timesheet_hours",
    "sum_strings",
    "TypeError",
    md("# Weekly hours\nFrom the CSV timesheet, per person."),
    c("import csv"),
    c("""
        with open("timesheets/week23.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        rows[:2]
    """),
    bug(
        """
        hours = {}
        for person in sorted({r["name"] for r in rows}):
            hours[person] = sum(r["hours"] for r in rows if r["name"] == person)
        """,
        'sum(r["hours"]',
        'sum(float(r["hours"])',
    ),
    c("""print("; ".join(f"{p}: {h:g}h" for p, h in hours.items()))"""),
    expected="Jonas: 22.5h; Priya: 24h",
    hint="float",
    files={
        "timesheets/week23.csv": """
            name,day,hours
            Priya,Mon,8
            Jonas,Mon,7.5
            Priya,Tue,7.25
            Jonas,Tue,6
            Priya,Wed,8.75
            Jonas,Wed,9
        """,
    },
)

task(
    "sum_strings_fasta_sequence",
    "sum_strings",
    "TypeError",
    md("# GC content\nOne record from a FASTA file, wrapped over several lines."),
    c("""
        with open("seqs/sample.fasta") as fh:
            lines = fh.read().splitlines()
        header = lines[0].lstrip(">").split()[0]
    """),
    bug(
        """
        sequence = sum(line.strip() for line in lines if not line.startswith(">"))
        gc = (sequence.count("G") + sequence.count("C")) / len(sequence)
        """,
        "sum(line.strip()",
        '"".join(line.strip()',
    ),
    c("""print(f"{header}: {len(sequence)} bp, GC {gc:.1%}")"""),
    expected="sample_7: 42 bp, GC 47.6%",
    hint="join",
    files={
        "seqs/sample.fasta": """
            >sample_7 partial cds
            ATGCGTACGTTAGC
            GGCATCGATCGATT
            ACGTAGCTAGCTAA
        """,
    },
)

# ================================================================== none_mutating

task(
    "none_mutating_list_sort_podium",
    "none_mutating",
    "TypeError",
    md("# Podium\nThe three best average marks."),
    c("import statistics"),
    c("""
        results = {
            "Aiko": [78, 85, 91],
            "Bram": [88, 92, 79],
            "Cleo": [95, 89, 93],
            "Dev": [70, 75, 80],
            "Esme": [84, 90, 88],
        }
    """),
    bug(
        """
        averages = [(name, round(statistics.mean(m), 1)) for name, m in results.items()]
        ranked = averages.sort(key=lambda pair: pair[1], reverse=True)
        podium = ranked[:3]
        """,
        "averages.sort(key=",
        "sorted(averages, key=",
    ),
    c("""print(" > ".join(f"{name} {avg}" for name, avg in podium))"""),
    expected="Cleo 92.3 > Esme 87.3 > Bram 86.3",
    hint="sorted",
)

task(
    "none_mutating_append_assigned",
    "none_mutating",
    "AttributeError",
    md("# Ticket numbers mentioned in the support log"),
    c("import re"),
    c("""
        log_lines = [
            "09:02 agent=kim closed ticket #4411",
            "09:15 agent=lou note: waiting on customer",
            "09:31 agent=kim reopened ticket #4398",
            "10:04 agent=sam merged ticket #4411 into ticket #4420",
            "10:40 agent=lou closed ticket #4375",
        ]
    """),
    bug(
        """
        def extract_ids(lines):
            ids = []
            for line in lines:
                for number in re.findall(r"ticket #(\\d+)", line):
                    ids = ids.append(int(number))
            return ids


        ticket_ids = extract_ids(log_lines)
        """,
        "ids = ids.append(",
        "ids.append(",
    ),
    c("""print(f"{len(ticket_ids)} mentions, tickets {sorted(set(ticket_ids))}")"""),
    expected="5 mentions, tickets [4375, 4398, 4411, 4420]",
    hint="None",
)

# ================================================================== off_by_one

task(
    "off_by_one_month_number_lookup",
    "off_by_one",
    "IndexError",
    md("# Best months\nRevenue per calendar month, labelled with short names."),
    c("""
        import pandas as pd

        MONTH_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun",
                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    """),
    c("""
        sales = pd.DataFrame({
            "date": pd.to_datetime(["2023-01-15", "2023-03-02", "2023-03-20", "2023-06-11",
                                    "2023-07-04", "2023-11-24", "2023-12-08", "2023-12-21"]),
            "amount": [300, 120, 410, 260, 180, 640, 520, 390],
        })
        monthly = sales.groupby(sales["date"].dt.month)["amount"].sum()
    """),
    bug(
        """
        labelled = {MONTH_ABBR[month]: int(total) for month, total in monthly.items()}
        """,
        "MONTH_ABBR[month]",
        "MONTH_ABBR[month - 1]",
    ),
    c("""
        best = sorted(labelled.items(), key=lambda kv: kv[1], reverse=True)[:3]
        print("best months:", best)
    """),
    expected="best months: [('Dec', 910), ('Nov', 640), ('Mar', 530)]",
    hint="month - 1",
)

task(
    "off_by_one_odometer_deltas",
    "off_by_one",
    "IndexError",
    md("# Trip distances\nKilometres between consecutive odometer readings."),
    c("""
        odometer = [48210.4, 48262.9, 48263.5, 48401.0, 48455.2]
    """),
    bug(
        """
        def deltas(values):
            return [round(values[i + 1] - values[i], 1) for i in range(len(values))]


        trips = deltas(odometer)
        """,
        "range(len(values))",
        "range(len(values) - 1)",
    ),
    c("""print(f"trips: {trips}, longest {max(trips)} km")"""),
    expected="trips: [52.5, 0.6, 137.5, 54.2], longest 137.5 km",
    hint="len(values) - 1",
)

# ================================================================== brackets

task(
    "brackets_numpy_grid_row",
    "brackets",
    "SyntaxError",
    md("# Elevation grid\nA 3 × 4 patch of terrain heights (m)."),
    c("import numpy as np"),
    bug(
        """
        grid = np.array([
            [312, 318, 325, 331],
            [309, 315, 322, 340,
            [305, 311, 319, 336],
        ])
        """,
        "[309, 315, 322, 340,",
        "[309, 315, 322, 340],",
    ),
    c("""
        col_means = grid.mean(axis=0).round(1)
        peak = np.unravel_index(grid.argmax(), grid.shape)
    """),
    c("""print(f"column means {col_means.tolist()}, peak {grid.max()} m at {tuple(int(i) for i in peak)}")"""),
    expected="column means [308.7, 314.7, 322.0, 335.7], peak 340 m at (1, 3)",
    hint="]",
)

task(
    "brackets_groupby_key_list",
    "brackets",
    "SyntaxError",
    md("# Parcel delivery times\nPer carrier and service level."),
    c("import pandas as pd"),
    c("""
        shipments = pd.DataFrame({
            "parcel_id": range(1, 9),
            "carrier": ["DHL", "UPS", "DHL", "DHL", "UPS", "UPS", "DHL", "UPS"],
            "service": ["std", "std", "exp", "std", "exp", "std", "exp", "std"],
            "days": [3, 4, 1, 2, 1, 5, 2, 3],
        })
    """),
    bug(
        """
        summary = (
            shipments.groupby(["carrier", "service"].agg(
                parcels=("parcel_id", "count"),
                avg_days=("days", "mean"),
            )
            .round(2)
        )
        """,
        '"service"].agg(',
        '"service"]).agg(',
    ),
    c("""print(summary.reset_index().to_string(index=False))"""),
    expected=clean("""
        carrier service  parcels  avg_days
            DHL     exp        2       1.5
            DHL     std        2       2.5
            UPS     exp        1       1.0
            UPS     std        3       4.0
    """),
    hint=")",
)

# ================================================================== indentation

task(
    "indentation_class_method_body",
    "indentation",
    "IndentationError",
    md("# Gradebook\nA small class for the marks of one course."),
    bug(
        """
        class Gradebook:
            def __init__(self, pass_mark):
                self.pass_mark = pass_mark
                self.marks = {}

            def record(self, student, mark):
                self.marks.setdefault(student, []).append(mark)

            def failing(self):
            return sorted(s for s, m in self.marks.items() if sum(m) / len(m) < self.pass_mark)
        """,
        "\n    return sorted(",
        "\n        return sorted(",
    ),
    c("""
        book = Gradebook(pass_mark=50)
        for student, mark in [("ola", 45), ("pim", 72), ("ola", 51), ("quin", 38), ("pim", 66), ("quin", 59)]:
            book.record(student, mark)
    """),
    c("""print(f"failing: {book.failing()} of {len(book.marks)}")"""),
    expected="failing: ['ola', 'quin'] of 3",
    hint="indent",
)

task(
    "indentation_log_loop_unindent",
    "indentation",
    "IndentationError",
    md("# Error rate of the web server log"),
    c("""
        from pathlib import Path

        log_path = Path("server") / "app.log"
    """),
    bug(
        """
        errors = total = 0
        with log_path.open() as fh:
            for line in fh:
                if " ERROR " in line:
                    errors += 1
              total += 1
        """,
        "\n      total += 1",
        "\n        total += 1",
    ),
    c("""print(f"{errors} errors in {total} lines ({errors / total:.0%})")"""),
    expected="2 errors in 8 lines (25%)",
    hint="indent",
    files={
        "server/app.log": """
            2024-05-02 10:00:01 INFO started
            2024-05-02 10:00:05 INFO GET /health 200
            2024-05-02 10:01:13 ERROR db timeout after 5s
            2024-05-02 10:01:40 INFO GET /orders 200
            2024-05-02 10:02:02 WARN slow query 1.8s
            2024-05-02 10:02:30 ERROR GET /orders 500
            2024-05-02 10:03:00 INFO GET /health 200
            2024-05-02 10:03:12 INFO stopped
        """,
    },
)

# ================================================================== shape

task(
    "shape_stacked_lists_transpose",
    "shape",
    "ValueError",
    md("# Body-mass index\nThree measurement lists, one table."),
    c("""
        import numpy as np
        import pandas as pd
    """),
    c("""
        height_cm = [172, 165, 180, 158, 190]
        weight_kg = [70.0, 61.5, 88.2, 52.0, 95.4]
        age = [34, 29, 41, 25, 38]
    """),
    bug(
        """
        people = pd.DataFrame(np.array([height_cm, weight_kg, age]), columns=["height_cm", "weight_kg", "age"])
        people["bmi"] = people["weight_kg"] / (people["height_cm"] / 100) ** 2
        """,
        "weight_kg, age]),",
        "weight_kg, age]).T,",
    ),
    c("""print("bmi:", people["bmi"].round(1).tolist())"""),
    expected="bmi: [23.7, 22.6, 27.2, 20.8, 26.4]",
    hint=".T",
)

task(
    "shape_flat_units_reshape",
    "shape",
    "ValueError",
    md("# Units sold\nThe export is one number per line: product by product, January to December."),
    c("""
        import numpy as np
        import pandas as pd

        products = ["kettle", "toaster", "blender"]
        months = pd.date_range("2023-01-01", periods=12, freq="MS").strftime("%b").tolist()
    """),
    c("""
        flat = np.loadtxt("sales/units.txt", dtype=int)
        flat.shape
    """),
    bug(
        """
        units = pd.DataFrame(flat, index=products, columns=months)
        """,
        "DataFrame(flat,",
        "DataFrame(flat.reshape(3, 12),",
    ),
    c("""print(units.sum(axis=1).to_dict(), units.idxmax(axis=1).to_dict())"""),
    expected=("{'kettle': 198, 'toaster': 119, 'blender': 267} {'kettle': 'Dec', 'toaster': 'Nov', 'blender': 'Jul'}"),
    hint="reshape",
    files={
        "sales/units.txt": "\n".join(
            str(n)
            for n in [
                *[14, 12, 15, 13, 16, 15, 17, 16, 18, 19, 20, 23],
                *[8, 7, 9, 10, 9, 11, 10, 9, 12, 11, 13, 10],
                *[18, 17, 20, 22, 25, 28, 31, 27, 23, 20, 19, 17],
            ]
        ),
    },
)

# ================================================================== keyword

task(
    "keyword_pivot_table_columns",
    "keyword",
    "TypeError",
    md("# Average fare by zone and time of day"),
    c("import pandas as pd"),
    c("""
        trips = pd.DataFrame({
            "zone": ["centre", "airport", "centre", "harbour", "airport", "centre", "harbour", "airport"],
            "pickup": pd.to_datetime(["2024-03-01 07:40", "2024-03-01 09:15", "2024-03-01 13:05",
                                      "2024-03-01 14:50", "2024-03-01 19:30", "2024-03-01 21:10",
                                      "2024-03-02 08:05", "2024-03-02 15:45"]),
            "fare": [11.0, 42.5, 9.5, 15.0, 39.0, 13.5, 17.0, 45.5],
        })
        trips["half"] = (trips["pickup"].dt.hour >= 12).map({False: "am", True: "pm"})
    """),
    bug(
        """
        table = trips.pivot_table(index="zone", column="half", values="fare", aggfunc="mean")
        """,
        'column="half"',
        'columns="half"',
    ),
    c("""print(table.round(2).to_dict("index"))"""),
    expected=(
        "{'airport': {'am': 42.5, 'pm': 42.25}, 'centre': {'am': 11.0, 'pm': 11.5}, "
        "'harbour': {'am': 17.0, 'pm': 15.0}}"
    ),
    hint="columns",
)

task(
    "keyword_json_dumps_sort_keys",
    "keyword",
    "TypeError",
    md("# Daily maxima as a stable JSON payload\nKeys sorted so that the file diffs cleanly."),
    c("""
        import json
        from itertools import groupby
    """),
    c("""
        readings = [
            ("2024-07-02", 24.1), ("2024-07-01", 22.8), ("2024-07-02", 27.3),
            ("2024-07-01", 25.6), ("2024-07-03", 19.9), ("2024-07-03", 21.4),
        ]
        readings.sort()
        maxima = {day: max(t for _, t in group) for day, group in groupby(readings, key=lambda r: r[0])}
    """),
    bug(
        """
        report = {"station": "roof-2", "unit": "C", "maxima": maxima, "count": len(readings)}
        payload = json.dumps(report, sort_key=True)
        """,
        "sort_key=True",
        "sort_keys=True",
    ),
    c("""print(payload)"""),
    expected=(
        '{"count": 6, "maxima": {"2024-07-01": 25.6, "2024-07-02": 27.3, "2024-07-03": 21.4}, '
        '"station": "roof-2", "unit": "C"}'
    ),
    hint="sort_keys",
)


# ================================================================== writing


def notebook(t: Task) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for n, cell in enumerate(t.cells):
        cell_id = f"h2-{n:02d}-{t.id.replace('_', '-')}"[:64]
        if isinstance(cell, Md):
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.text, id=cell_id))
        else:
            source = cell.source if isinstance(cell, Bug) else cell
            nb.cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
    return nb


def manifest_entry(t: Task) -> dict[str, object]:
    (index,) = [n for n, cell in enumerate(t.cells) if isinstance(cell, Bug)]
    broken = t.cells[index]
    assert isinstance(broken, Bug)
    return {
        "id": t.id,
        "family": t.family,
        "error": t.error,
        "expected": t.expected,
        "hint": t.hint,
        "fixed_cell": {"index": index, "source": broken.fixed()},
    }


def check(tasks: list[Task]) -> None:
    """What can be checked without a kernel; ``fix_rate.py --verify`` runs the notebooks."""
    errors: list[str] = []
    ids = [t.id for t in tasks]
    if len(ids) != len(set(ids)):
        errors.append("duplicate task ids")
    for family in FAMILIES:
        count = sum(t.family == family for t in tasks)
        if count != TASKS_PER_FAMILY:
            errors.append(f"{family}: {count} tasks instead of {TASKS_PER_FAMILY}")
    for t in tasks:
        if t.family not in FAMILIES:
            errors.append(f"{t.id}: family {t.family!r} is not one of the families")
        if not t.id.startswith(f"{t.family}_"):
            errors.append(f"{t.id}: id does not start with {t.family}_")
        code = [cell for cell in t.cells if not isinstance(cell, Md)]
        bugs = [cell for cell in code if isinstance(cell, Bug)]
        if len(bugs) != 1:
            errors.append(f"{t.id}: {len(bugs)} buggy cells")
        elif t.family != "out_of_order" and t.hint in bugs[0].wrong:
            errors.append(f"{t.id}: the hint {t.hint!r} is already in the buggy text")
        if not 3 <= len(code) <= 8:
            errors.append(f"{t.id}: {len(code)} code cells")
        last = code[-1]
        if isinstance(last, Bug) or "print(" not in last:
            errors.append(f"{t.id}: the last code cell must print and be correct")
        if not (t.expected and t.hint):
            errors.append(f"{t.id}: empty expected or hint")
    if errors:
        raise SystemExit("\n".join(errors))


def main() -> None:
    check(TASKS)
    for t in TASKS:
        folder = HERE / t.id
        folder.mkdir(exist_ok=True)
        nbformat.write(notebook(t), folder / "notebook.ipynb")
        for rel, text in t.files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    entries = [manifest_entry(t) for t in TASKS]
    (HERE / "tasks.json").write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} tasks ({TASKS_PER_FAMILY} in each of {len(FAMILIES)} families) to {HERE}")


if __name__ == "__main__":
    main()
