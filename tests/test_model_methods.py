"""Convenience methods on model classes (model_methods.py), on every backend."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from dataflow_lab import (
    AccessDeniedError,
    ConcurrencyError,
    LocalRuntime,
    NotFoundError,
    RunHooks,
    TenantRequiredError,
    User,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.model_methods import RESERVED


def define_person(db, **options):
    @db.model
    class Person:
        name: str
        age: int = 0
        city: str | None = None

        __dataflow__ = options

    return Person


def test_create_get_update_delete_run_their_nodes(db):
    Person = define_person(db)
    ann = Person.create(name="Ann", age=30)
    assert ann["id"] == 1 and ann["age"] == 30 and ann["created_at"] is not None
    assert Person.get(ann["id"]) == ann
    moved = Person.update(ann["id"], city="Oslo", age={"$inc": 1})
    assert (moved["city"], moved["age"]) == ("Oslo", 31)
    assert Person.delete(ann["id"]) == {"id": ann["id"], "deleted": True}
    assert Person.get(ann["id"], raise_on_not_found=False) is None
    with pytest.raises(NotFoundError, match="Person with id 1 was not found"):
        Person.get(1)


def test_list_count_and_frame_take_filters_order_and_limits(db):
    Person = define_person(db)
    Person.bulk_create([{"name": n, "age": a} for n, a in [("a", 5), ("b", 50), ("c", 20), ("d", 35)]])
    older = Person.list({"age": {"$gte": 20}}, order_by="-age", limit=2)
    assert [p["name"] for p in older] == ["b", "d"]
    assert Person.count() == 4 and Person.count({"age": {"$lt": 10}}) == 1
    frame = Person.frame({"age": {"$gt": 100}})
    assert len(frame) == 0 and list(frame.columns) == [
        "id",
        "name",
        "age",
        "city",
        "created_at",
        "updated_at",
    ]
    assert Person.frame(order_by="name")["name"].tolist() == ["a", "b", "c", "d"]
    assert older.to_pandas()["age"].tolist() == [50, 35]


def test_upsert_and_the_bulk_methods(db):
    Person = define_person(db, unique=[["name"]])
    first = Person.upsert({"name": "Ann"}, create={"name": "Ann", "age": 1}, update={"age": 2})
    again = Person.upsert({"name": "Ann"}, create={"name": "Ann", "age": 1}, update={"age": 2})
    assert (first["created"], again["created"], again["record"]["age"]) == (True, False, 2)
    assert Person.bulk_create([{"name": "Bo"}, {"name": "Cy", "age": 7}])["inserted"] == 2
    assert Person.bulk_update({"age": 0}, city="Rome") == {"updated": 1}
    assert Person.bulk_update({"name": {"$in": ["Ann", "Cy"]}}, {"age": 9})["updated"] == 2
    assert Person.bulk_upsert([{"name": "Bo", "age": 3}, {"name": "Di"}], conflict_on=["name"]) == {
        "inserted": 1,
        "updated": 1,
    }
    assert Person.bulk_delete({"age": 9}) == {"deleted": 2}
    with pytest.raises(ValidationError, match="confirmed=True"):
        Person.bulk_delete({})
    assert Person.bulk_delete({}, confirmed=True) == {"deleted": 2}


def test_bulk_create_takes_a_data_frame(db):
    import pandas as pd

    Person = define_person(db)
    Person.bulk_create(pd.DataFrame({"name": ["x", "y"], "age": [1, 2]}))
    assert Person.frame()["age"].tolist() == [1, 2]


def test_async_twins_return_what_the_sync_methods_return(db):
    Person = define_person(db)

    async def main():
        ann = await Person.acreate(name="Ann")
        await Person.aupdate(ann["id"], age=4)
        await Person.abulk_create([{"name": "Bo"}])
        return (await Person.aget(ann["id"]), await Person.acount(), await Person.alist(order_by="name"),
                await Person.aaggregate(metrics={"n": "count"}), await Person.aframe())  # fmt: skip

    got, count, listed, agg, frame = asyncio.run(main())
    assert (got["age"], count, [p["name"] for p in listed], agg, len(frame)) == (
        4,
        2,
        ["Ann", "Bo"],
        [{"n": 2}],
        2,
    )
    for name in ("acreate", "aupsert", "abulk_delete", "abulk_upsert", "adelete", "abulk_update"):
        assert inspect.iscoroutinefunction(getattr(Person, name))


def test_a_method_inside_a_transaction_block_joins_it_and_rolls_back_with_it(db):
    Person = define_person(db)
    Person.create(name="kept")
    with pytest.raises(RuntimeError, match="boom"):
        with db.transaction():
            Person.create(name="gone")
            Person.bulk_update({"name": "kept"}, age=99)
            assert Person.count() == 2  # the block sees its own writes
            raise RuntimeError("boom")
    assert [(p["name"], p["age"]) for p in Person.list()] == [("kept", 0)]
    with db.transaction():
        Person.create(name="committed")
    assert Person.count() == 2


def test_a_failing_method_writes_nothing(db):
    Person = define_person(db, unique=[["name"]])
    Person.create(name="Ann")
    with pytest.raises(Exception, match="PersonBulkCreateNode"):
        Person.bulk_create([{"name": "Bo"}, {"name": "Ann"}])
    assert Person.count() == 1


def test_methods_reach_the_dataflow_hooks_and_its_monitoring(db):
    Person = define_person(db)
    seen = []

    class Spy(RunHooks):
        def after_node(self, *, node_id, node_type, **rest):
            seen.append((node_id, node_type))

        def after_workflow(self, *, workflow, mode, **rest):
            seen.append((workflow.name, str(mode)))

    db.hooks.subscribe(Spy())
    Person.create(name="Ann")
    Person.count()
    assert seen == [("create", "PersonCreateNode"), ("Person.create", "workflow"),
                    ("count", "PersonCountNode"), ("Person.count", "workflow")]  # fmt: skip


def test_using_runs_with_a_runtime_of_your_own(db):
    Person = define_person(db)
    seen = []

    class Spy(RunHooks):
        def before_node(self, *, node_id, **rest):
            seen.append(node_id)

    Person.using(runtime=LocalRuntime(hooks=[Spy()])).create(name="Ann")
    Person.create(name="Bo")  # the default runtime has no such hook
    assert seen == ["create"]


def test_access_control_applies_to_methods(db):
    Person = define_person(db)
    db.grant("viewer", Person, "read")
    with pytest.raises(AccessDeniedError, match="needs 'create' on Person"):
        Person.create(name="Ann")
    viewer = Person.using(user=User("vi", roles=["viewer"]))
    assert viewer.count() == 0 and viewer.list() == []
    with pytest.raises(AccessDeniedError, match="User 'vi'"):
        viewer.create(name="Ann")
    assert Person.using(user=User("ad", roles=["admin"])) is not None


def test_tenancy_applies_to_methods(db):
    Person = define_person(db, multi_tenant=True)
    with pytest.raises(TenantRequiredError, match="PersonCreateNode 'create'"):
        Person.create(name="nobody's")
    with db.tenant("acme"):
        Person.create(name="Ann")
    Person.using(tenant="globex").create(name="Bo")
    with db.tenant("acme"):
        assert [p["name"] for p in Person.list()] == ["Ann"]
    assert Person.using(tenant="globex").count() == 1


def test_versioned_update_takes_the_version_as_an_option(db):
    Person = define_person(db, versioned=True)
    ann = Person.create(name="Ann")
    assert Person.update(ann["id"], age=2, version=1)["version"] == 2
    with pytest.raises(ConcurrencyError):
        Person.update(ann["id"], age=3, version=1)


def test_the_class_stays_a_plain_class(db):
    Person = define_person(db)
    p = Person(name="x")
    assert (p.name, p.age, repr(p)) == ("x", 0, "Person(name='x')")
    assert Person.create(p)["name"] == "x"
    assert Person.create({"name": "y"}, age=3)["age"] == 3
    with pytest.raises(TypeError, match="'nmae'. Did you mean 'name'"):
        Person(nmae="x")


def test_a_class_with_its_own_init_keeps_it(db):
    from dataclasses import dataclass

    @db.model
    @dataclass
    class Point:
        x: int
        y: int = 0

    assert Point(1, 2) == Point(x=1, y=2)
    assert Point.create(Point(3))["x"] == 3


@pytest.mark.parametrize("name", ["count", "list", "delete", "frame", "aggregate", "acreate", "using"])
def test_a_field_a_method_would_shadow_is_refused_at_the_decorator(db, name):
    namespace = {"__annotations__": {"title": str, name: int}}
    cls = type("Widget", (), namespace)
    with pytest.raises(
        ValidationError, match=f"field '{name}' has the name of the convenience method"
    ) as caught:
        db.model(cls)
    assert "rename the field" in caught.value.hint
    assert "Widget" not in db.models  # nothing was registered


def test_an_attribute_of_the_class_a_method_would_shadow_is_refused(db):
    with pytest.raises(ValidationError, match="the class defines 'get'"):

        @db.model
        class Shelf:
            label: str

            def get(self):
                return self.label


def test_reserved_names_are_the_methods_their_async_twins_using_and_import_csv(db):
    Person = define_person(db)
    assert len(RESERVED) == 28
    for name in RESERVED:
        assert callable(getattr(Person, name)), name


def test_missing_and_unknown_fields_say_which_method_and_node(db):
    Person = define_person(db)
    with pytest.raises(ValidationError, match=r"Person.create\(\): missing name \(PersonCreateNode\)"):
        Person.create(age=1)
    with pytest.raises(ValidationError, match="unknown parameter 'nam'. Did you mean 'name'"):
        Person.create(nam="x")
    with pytest.raises(ValidationError, match="field 'age' got str"):
        Person.update(1, age="old")


def test_a_redefined_model_runs_its_new_nodes(db):
    define_person(db)

    @db.model
    class Person:
        name: str
        email: str = "-"

    assert Person.create(name="Ann")["email"] == "-"


def test_methods_and_the_workflow_by_hand_agree(db):
    Person = define_person(db)
    wf = WorkflowBuilder(db)
    wf.add_node("PersonCreateNode", "create", {"name": "Ann"})
    by_hand, _ = LocalRuntime().execute(wf.build())
    method = Person.create(name="Ann")
    assert {k: v for k, v in method.items() if k not in ("id", "created_at", "updated_at")} == {
        k: v for k, v in by_hand["create"].items() if k not in ("id", "created_at", "updated_at")
    }


def test_a_monitored_dataflow_counts_each_method_as_a_run(url):
    from dataflow_lab import DataFlow

    db = DataFlow(url, monitoring=True)
    try:
        Person = define_person(db)
        Person.create(name="Ann")
        Person.list()
        runs = db.metrics()["workflow_executions"]
        assert (runs["total"], runs["successful"]) == (2, 2)
    finally:
        db.close()


def test_the_main_arguments_may_be_given_by_name(db):
    Person = define_person(db, unique=[["name"]])
    ann = Person.create(name="Ann")
    assert Person.get(id=ann["id"])["name"] == "Ann"
    assert Person.update(id=ann["id"], age=3)["age"] == 3
    assert Person.upsert(where={"name": "Bo"}, create={"name": "Bo"})["created"] is True
    assert Person.bulk_create(data=[{"name": "Cy"}])["inserted"] == 1
    assert Person.bulk_update(filter={"name": "Cy"}, fields={"age": 1}) == {"updated": 1}
    assert Person.bulk_upsert(data=[{"name": "Cy", "age": 2}], conflict_on=["name"])["updated"] == 1
    assert Person.bulk_delete(filter={"name": "Cy"}) == {"deleted": 1}
    assert Person.delete(id=ann["id"])["deleted"] is True
    assert Person.aggregate(group_by=["name"], metrics={"n": "count"}) == [{"name": "Bo", "n": 1}]


def test_import_csv_streams_a_file_into_the_model_all_or_nothing(db, tmp_path):
    Person = define_person(db)
    good = tmp_path / "people.csv"
    good.write_text("name,age,city\nAnn,30,Oslo\nBo,,\n")
    assert Person.import_csv(good) == {"inserted": 2}
    assert [(p["name"], p["age"], p["city"]) for p in Person.list(order_by="name")] == [
        ("Ann", 30, "Oslo"),
        ("Bo", 0, None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,age\nCy,41\nDi,not a number\n")
    with pytest.raises(ValidationError, match="age"):
        Person.import_csv(bad)
    assert Person.count() == 2  # nothing of the bad file was written


def test_import_csv_runs_as_the_methods_user(db, tmp_path):
    Person = define_person(db)
    db.grant("loader", "Person", "bulk_create")
    path = tmp_path / "people.csv"
    path.write_text("name\nAnn\n")
    with pytest.raises(AccessDeniedError):
        Person.import_csv(path)
    assert Person.using(user=User("l", roles=["loader"])).import_csv(path) == {"inserted": 1}
