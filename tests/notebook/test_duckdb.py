"""DuckDB over the replica: analytical SQL, the tables it reads, cached frames, live results."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

import plasma_nb as plasma
from plasma_nb import QueryError
from plasma_nb.cli import load_schema_module
from plasma_nb.notebook.duck import DuckEngine
from plasma_nb.notebook.parameters import bind
from tests.notebook.helpers import NOTEBOOKS, RecordingComm, wait_for

CUSTOMERS = [("c1", "Ada", "Paris"), ("c2", "Bo", "Oslo"), ("c3", "Cy", "Paris")]
PRODUCTS = [("p1", "Tea", 4.0), ("p2", "Cake", 6.5)]
ORDERS = [  # id, customer, product, quantity, day
    ("o1", "c1", "p1", 2, 1), ("o2", "c1", "p2", 1, 2), ("o3", "c2", "p1", 5, 2),
    ("o4", "c3", "p2", 2, 3), ("o5", "c3", "p1", 1, 4),
]


def placed(day: int) -> str:
    return f"2024-05-{day:02d}T10:00:00.000000Z"


@pytest.fixture
async def shop() -> AsyncIterator[Any]:
    schema, mutators = load_schema_module(str(NOTEBOOKS / "shop.py"))
    client = await plasma.connect(None, schema=schema, mutators=mutators, name="shop")
    for id, name, city in CUSTOMERS:
        client.mutate.add_customer(id=id, name=name, city=city)
    for id, name, price in PRODUCTS:
        client.mutate.add_product(id=id, name=name, price=price)
    for id, customer, product, quantity, day in ORDERS:
        client.mutate.place_order(id=id, customer=customer, product=product,
                                  quantity=quantity, placed=placed(day))
    yield client
    await client.close()


async def test_joins_window_functions_and_aggregates(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        frame = duck.frame_of("""
            WITH spend AS (
                SELECT c.city, c.name, sum(o.quantity * p.price) AS total
                FROM orders o JOIN customers c ON c.id = o.customer
                JOIN products p ON p.id = o.product
                GROUP BY c.city, c.name
            )
            SELECT city, name, total,
                   rank() OVER (PARTITION BY city ORDER BY total DESC) AS rank_in_city
            FROM spend ORDER BY city, rank_in_city
        """)
        assert frame.to_dict("records") == [
            {"city": "Oslo", "name": "Bo", "total": 20.0, "rank_in_city": 1},
            {"city": "Paris", "name": "Cy", "total": 17.0, "rank_in_city": 1},
            {"city": "Paris", "name": "Ada", "total": 14.5, "rank_in_city": 2},
        ]
        running = duck.frame_of(
            "SELECT id, sum(quantity) OVER (ORDER BY placed, id) AS running FROM orders "
            "ORDER BY placed, id")
        assert list(running["running"]) == [2, 3, 8, 10, 11]
    finally:
        duck.close()


async def test_columns_are_typed_from_the_schema(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        orders = duck.frame("orders")
        assert str(orders["shipped"].dtype) == "boolean"
        assert str(orders["quantity"].dtype) == "Int64"
        assert str(orders["placed"].dtype).startswith("datetime64")
        names, rows = duck.execute(
            "SELECT typeof(placed), typeof(shipped), min(placed) FROM orders GROUP BY ALL")
        assert rows[0][:2] == ("TIMESTAMP WITH TIME ZONE", "BOOLEAN")
        assert rows[0][2] == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    finally:
        duck.close()


async def test_it_knows_the_tables_a_query_reads(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        assert duck.tables_in("SELECT * FROM orders") == {"orders"}
        assert duck.tables_in(
            "WITH x AS (SELECT * FROM Customers) SELECT * FROM x JOIN orders USING (id) "
            "WHERE id IN (SELECT id FROM products)") == {"customers", "orders", "products"}
        assert duck.tables_in("SELECT 1") == frozenset()
    finally:
        duck.close()


async def test_frames_are_cached_until_their_table_changes(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        sql = "SELECT count(*) FROM orders JOIN customers c ON c.id = orders.customer"
        assert duck.execute(sql)[1] == [(5,)]
        assert duck.loads == 2
        duck.execute(sql)
        assert duck.loads == 2
        shop.mutate.ship_order(id="o1")
        await asyncio.to_thread(wait_for, lambda: "orders" not in duck._frames, 10, "a reload")
        assert duck.execute("SELECT count(*) FROM orders WHERE shipped")[1] == [(1,)]
        assert duck.loads == 3  # customers stayed cached
    finally:
        duck.close()


async def test_parameters_use_duckdb_spelling(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        sql, params = bind("SELECT name FROM customers WHERE city = :city "
                           "AND name::VARCHAR != ':city'", {"city": "Oslo"}, style="dollar")
        assert sql == ("SELECT name FROM customers WHERE city = $city "
                       "AND name::VARCHAR != ':city'")
        assert duck.execute(sql, params)[1] == [("Bo",)]
    finally:
        duck.close()


async def test_duckdb_errors_are_query_errors(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        with pytest.raises(QueryError, match="DuckDB: Parser Error"):
            duck.execute("SELEC 1")
    finally:
        duck.close()


async def test_a_live_result_reruns_when_its_tables_change(shop: Any) -> None:
    duck = DuckEngine(shop)
    try:
        live = duck.live("SELECT product, sum(quantity) AS n FROM orders "
                         "WHERE NOT shipped GROUP BY product ORDER BY product")
        assert live.tables == {"orders"}
        assert live.rows == [{"product": "p1", "n": 8}, {"product": "p2", "n": 3}]
        heard: list[Any] = []
        live.subscribe(heard.append)
        shop.mutate.ship_order(id="o3")
        await asyncio.to_thread(wait_for, lambda: heard, 10, "a new result")
        assert live.rows == [{"product": "p1", "n": 3}, {"product": "p2", "n": 3}]
        assert list(live.df["n"]) == [3, 3]
        assert heard[-1].version == live.version == 2
        # Running it again to the same result tells nobody.
        assert live.refresh() is False
        assert live.version == 2 and len(heard) == 1
        # A table the query does not read is not even watched.
        shop.mutate.add_customer(id="c9", name="Di", city="Rome")
        await asyncio.sleep(0.3)
        assert live.version == 2 and len(heard) == 1
        live.close()
    finally:
        duck.close()


def test_through_the_magic_with_a_live_widget(ip: Any, comms: list[RecordingComm]) -> None:
    ip.run_cell(f"%plasma connect local --schema {NOTEBOOKS / 'shop.py'} --name s")
    ip.run_cell("%plasma mutate add_customer id=c1 name=Ada city=Paris")
    ip.run_cell("city = 'Paris'")
    result = ip.run_cell("%%plasma sql --engine duckdb --live -o by_city\n"
                         "SELECT city, count(*) AS n FROM customers WHERE city = :city "
                         "GROUP BY city")
    assert result.success
    live = ip.user_ns["by_city"]
    assert live.rows == [{"city": "Paris", "n": 1}]
    data, _ = ip.display_formatter.format(live)
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "Paris" in data["text/html"]
    from plasma_nb.notebook.display import table_for

    widget = table_for(live)
    ip.run_cell("%plasma mutate add_customer id=c2 name=Cy city=Paris")
    wait_for(lambda: widget.window == [["Paris", 2]], 10, "the widget to follow")
