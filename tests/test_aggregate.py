"""The Aggregate node (nodes/aggregate.py): every function and date bucket, on every backend."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from dataflow_lab import AccessDeniedError, LocalRuntime, User, ValidationError, WorkflowBuilder
from dataflow_lab.errors import TenantRequiredError, WorkflowValidationError

UTC = dt.UTC


def define_trip(db, **options):
    @db.model
    class Trip:
        station: str
        km: float
        minutes: int
        fare: Decimal
        member: bool
        started_at: dt.datetime
        day: dt.date
        note: str | None = None

        __dataflow__ = options

    return Trip


TRIPS = [  # station, km, minutes, fare, member, started_at (UTC)
    ("A", 1.5, 10, "1.10", True, dt.datetime(2024, 1, 1, 23, 30, tzinfo=UTC)),  # a Monday
    ("A", 2.5, 20, "2.20", False, dt.datetime(2024, 1, 2, 0, 30, tzinfo=UTC)),
    ("B", 4.0, 30, "3.30", True, dt.datetime(2024, 1, 7, 12, 0, tzinfo=UTC)),  # Sunday: the same week
    ("B", 1.0, 40, "0.40", True, dt.datetime(2024, 2, 29, 8, 0, tzinfo=UTC)),
    ("C", 3.0, 50, "5.00", False, dt.datetime(2025, 3, 1, 9, 0, tzinfo=UTC)),
]


def load(db, Trip):
    rows = [
        {"station": s, "km": k, "minutes": m, "fare": Decimal(f), "member": b, "started_at": t,
         "day": t.date()}
        for s, k, m, f, b, t in TRIPS
    ]  # fmt: skip
    Trip.bulk_create(rows)


def aggregate(db, **params):
    wf = WorkflowBuilder(db)
    wf.add_node("TripAggregateNode", "agg", params)
    results, _ = LocalRuntime().execute(wf.build())
    return results["agg"]


def test_counts_sums_averages_minimums_and_maximums_per_group(db):
    Trip = define_trip(db)
    load(db, Trip)
    out = aggregate(
        db,
        group_by=["station"],
        metrics={
            "trips": "count",
            "km": ("sum", "km"),
            "avg_min": ("avg", "minutes"),
            "minutes": ("sum", "minutes"),
            "fare": ("sum", "fare"),
            "cheapest": ("min", "fare"),
            "first": ("min", "started_at"),
            "last": ("max", "started_at"),
            "longest": ("max", "minutes"),
            "members": ("sum", "member"),
            "notes": ("count", "note"),
            "days": ("count_distinct", "day"),
        },
    )
    assert out["count"] == 3
    a, b, c = out["records"]
    assert a == {
        "station": "A", "trips": 2, "km": 4.0, "avg_min": 15.0, "minutes": 30, "fare": Decimal("3.30"),
        "cheapest": Decimal("1.10"), "first": TRIPS[0][5], "last": TRIPS[1][5], "longest": 20,
        "members": 1, "notes": 0, "days": 2,
    }  # fmt: skip
    assert (b["station"], b["trips"], b["fare"], b["members"], b["days"]) == ("B", 2, Decimal("3.70"), 2, 2)
    assert (c["station"], c["avg_min"], c["longest"]) == ("C", 50.0, 50)
    assert type(a["trips"]) is int and type(a["minutes"]) is int and type(a["avg_min"]) is float
    assert isinstance(a["fare"], Decimal) and a["first"].tzinfo is not None


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("day", {dt.date(2024, 1, 1): 1, dt.date(2024, 1, 2): 1, dt.date(2024, 1, 7): 1,
                 dt.date(2024, 2, 29): 1, dt.date(2025, 3, 1): 1}),
        ("week", {dt.date(2024, 1, 1): 3, dt.date(2024, 2, 26): 1, dt.date(2025, 2, 24): 1}),
        ("month", {dt.date(2024, 1, 1): 3, dt.date(2024, 2, 1): 1, dt.date(2025, 3, 1): 1}),
        ("year", {dt.date(2024, 1, 1): 4, dt.date(2025, 1, 1): 1}),
    ],
)  # fmt: skip
@pytest.mark.parametrize("field", ["started_at", "day"])
def test_date_buckets_start_on_the_first_day_of_their_period_in_utc(db, unit, expected, field):
    Trip = define_trip(db)
    load(db, Trip)
    out = aggregate(db, group_by=[(unit, field)], metrics={"trips": "count"})
    key = f"{field}_{unit}"
    assert {r[key]: r["trips"] for r in out["records"]} == expected
    assert [r[key] for r in out["records"]] == sorted(expected)  # ordered by the key
    assert all(type(r[key]) is dt.date for r in out["records"])


def test_filter_applies_before_grouping_and_having_after(db):
    Trip = define_trip(db)
    load(db, Trip)
    out = aggregate(
        db,
        group_by=["station"],
        metrics={"trips": "count", "km": ("sum", "km")},
        filter={"minutes": {"$gte": 20}},
        having={"trips": {"$gte": 2}},
    )
    assert out["records"] == [{"station": "B", "trips": 2, "km": 5.0}]
    decimals = aggregate(db, group_by=["station"], metrics={"fare": ("sum", "fare")},
                         having={"fare": {"$gt": Decimal("3.5")}})  # fmt: skip
    assert [r["station"] for r in decimals["records"]] == ["B", "C"]
    either = aggregate(db, group_by=["station"], metrics={"trips": "count", "km": ("sum", "km")},
                       having={"$or": [{"km": {"$lt": 4}}, {"trips": 1}]})  # fmt: skip
    assert [r["station"] for r in either["records"]] == ["C"]


def test_order_by_and_limit_take_metric_names_and_group_keys(db):
    Trip = define_trip(db)
    load(db, Trip)
    out = aggregate(db, group_by=["station"], metrics={"km": ("sum", "km")}, order_by="-km", limit=2)
    assert [(r["station"], r["km"]) for r in out["records"]] == [("B", 5.0), ("A", 4.0)]
    out = aggregate(db, group_by=["station"], metrics={"n": "count"}, order_by=[{"station": -1}])
    assert [r["station"] for r in out["records"]] == ["C", "B", "A"]


def test_without_group_by_the_whole_table_is_one_group(db):
    Trip = define_trip(db)
    assert aggregate(db)["records"] == [{"count": 0}]
    load(db, Trip)
    out = aggregate(
        db, metrics={"trips": "count", "km": ("sum", "km"), "stations": ("count_distinct", "station")}
    )
    assert out == {"records": [{"trips": 5, "km": 12.0, "stations": 3}], "count": 1}


def test_it_is_one_statement_with_its_values_bound(db):
    Trip = define_trip(db)
    sql = db.nodes.TripAggregateNode.sql(
        {"group_by": ["station"], "metrics": {"n": "count"}, "filter": {"station": "x'; DROP TABLE trips; --"},
         "having": {"n": {"$gt": 1}}}
    )  # fmt: skip
    text, _, params = sql.partition("-- parameters: ")
    assert text.count("SELECT") == 1 and "GROUP BY" in text and "HAVING" in text
    assert "DROP TABLE" not in text and "x'; DROP TABLE trips; --" in params
    assert Trip.count() == 0  # the table is there, untouched


def test_the_model_method_and_the_node_agree(db):
    Trip = define_trip(db)
    load(db, Trip)
    records = Trip.aggregate(["station"], {"trips": "count"}, order_by="-trips", limit=1)
    assert records == [{"station": "A", "trips": 2}]
    assert list(records.to_pandas().columns) == ["station", "trips"]


def test_soft_deleted_rows_are_not_counted_unless_asked(db):
    Trip = define_trip(db, soft_delete=True)
    load(db, Trip)
    Trip.bulk_delete({"station": "A"})
    assert Trip.aggregate(metrics={"n": "count"}) == [{"n": 3}]
    assert Trip.aggregate(metrics={"n": "count"}, include_deleted=True) == [{"n": 5}]


def test_a_tenant_aggregates_its_own_rows_only(db):
    Trip = define_trip(db, multi_tenant=True)
    with db.tenant("acme"):
        load(db, Trip)
    with db.tenant("other"):
        Trip.create(station="Z", km=1.0, minutes=1, fare=Decimal(1), member=True,
                    started_at=TRIPS[0][5], day=TRIPS[0][5].date())  # fmt: skip
        assert Trip.aggregate(["station"], {"n": "count"}) == [{"station": "Z", "n": 1}]
    with db.tenant("acme"):
        assert [r["station"] for r in Trip.aggregate(["station"])] == ["A", "B", "C"]
    with pytest.raises(TenantRequiredError, match="TripAggregateNode"):
        Trip.aggregate(["station"])


def test_access_control_treats_aggregate_as_a_read(db):
    Trip = define_trip(db)
    db.grant("viewer", Trip, "read")
    db.grant("loader", Trip, "bulk_create")
    load_as = Trip.using(user=User("l", roles=["loader"]))
    load_as.bulk_create([{"station": "A", "km": 1.0, "minutes": 1, "fare": Decimal(1), "member": True,
                          "started_at": TRIPS[0][5], "day": TRIPS[0][5].date()}])  # fmt: skip
    assert Trip.using(user=User("v", roles=["viewer"])).aggregate(metrics={"n": "count"}) == [{"n": 1}]
    with pytest.raises(AccessDeniedError, match="'aggregate' on Trip"):
        load_as.aggregate(metrics={"n": "count"})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": ["stationn"]}, "Model 'Trip' has no field 'stationn' in group_by. Did you mean 'station'"),
        ({"metrics": {"km": ("sum", "kms")}}, "Model 'Trip' has no field 'kms' in metric 'km'"),
        ({"metrics": {"km": ("total", "km")}}, "Trip: metric 'km' uses unknown function 'total'"),
        ({"metrics": {"s": ("sum", "station")}},
         "Trip: metric 's' is sum over field 'station', which holds str; sum works on int, float, Decimal"),
        ({"metrics": {"s": ("avg", "note")}}, "metric 's' is avg over field 'note', which holds str"),
        ({"metrics": {"m": ("max", "member")}}, "metric 'm' is max over field 'member', which holds bool"),
        ({"metrics": {"n": "count"}, "having": {"km": {"$gt": 1}}},
         "TripAggregateNode 'agg': having names 'km', which is not a metric"),
        ({"group_by": ["station"], "having": {"station": "A"}}, "having names 'station', which is not a metric"),
        ({"metrics": {"n": "count"}, "order_by": "-trips"}, "order_by names 'trips', which is not a group key"),
        ({"metrics": {"n": "sum"}}, "metric 'n' is 'sum' without a field"),
        ({"group_by": [("hour", "started_at")]}, "group_by bucket 'hour' is not known"),
        ({"group_by": [("day", "station")]}, "buckets field 'station', which holds str"),
        ({"group_by": ["station"], "metrics": {"station": "count"}}, "'station' is both a group key and a metric"),
        ({"metrics": {"bad name": "count"}}, "Metric name of Trip 'bad name' is not a valid identifier"),
        ({"metrics": {"n": "count"}, "having": {"n": {"$gt": "many"}}}, "TripAggregateNode 'agg': having: Trip: field 'n' got str 'many'"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_at_build_naming_the_node_model_and_field(db, params, message):
    define_trip(db)
    wf = WorkflowBuilder(db)
    wf.add_node("TripAggregateNode", "agg", params)
    with pytest.raises(WorkflowValidationError) as caught:
        wf.build()
    assert message in str(caught.value)
    assert "TripAggregateNode 'agg'" in str(caught.value)


def test_the_model_method_raises_the_same_errors(db):
    Trip = define_trip(db)
    with pytest.raises(ValidationError, match="sum over field 'station'"):
        Trip.aggregate(["station"], {"s": ("sum", "station")})


def test_a_connection_into_a_metric_of_a_record_is_type_checked(db):
    define_trip(db)

    def show(km: float) -> str:
        return f"{km} km"

    good = WorkflowBuilder(db)
    good.add_node("TripAggregateNode", "agg", {"metrics": {"km": ("sum", "km")}})
    good.add_node(show, "show")
    good.add_connection("agg", "records.0.km", "show", "km")
    good.build()
    bad = WorkflowBuilder(db)
    bad.add_node("TripAggregateNode", "agg", {"metrics": {"km": ("sum", "km")}})
    bad.add_node(show, "show")
    bad.add_connection("agg", "records.0.kms", "show", "km")
    with pytest.raises(WorkflowValidationError, match="has no 'kms'. Did you mean 'km'"):
        bad.build()


def test_the_catalogue_lists_the_aggregate_node_with_its_sql(db):
    from dataflow_lab.notebook.catalogue import Catalogue

    define_trip(db)
    catalogue = Catalogue(db)
    assert "12 nodes" in catalogue.text() and "TripAggregateNode(group_by:" in catalogue.text()
    entry = next(e for e in catalogue.entries["Trip"] if e.name == "TripAggregateNode")
    assert (
        entry.sql.replace("`", "").count("count(*) AS rows") == 1
        and "GROUP BY" in entry.sql
        and "sum(trips.km)" in entry.sql
    )
    assert "GROUP BY" in catalogue.html()
