"""The query DSL: expression nodes, ``select()`` and the statement classes."""

from __future__ import annotations

import re

import pytest

from plasma_nb import (
    QueryError,
    and_,
    col,
    eq,
    ge,
    gt,
    le,
    lt,
    ne,
    not_,
    or_,
    select,
    table,
)
from plasma_nb.core.dialect import PostgresDialect, SQLiteDialect
from plasma_nb.core.expr import (
    And,
    ColumnRef,
    Compare,
    Expr,
    InList,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
    Ordering,
)
from plasma_nb.core.query import Delete, Insert, Select, Update

todos = table(
    "todos",
    id=col.id(),
    title=col.text(),
    done=col.boolean(default=False),
    owner=col.text(nullable=True),
    rank=col.integer(nullable=True),
)
users = table("users", id=col.id(), name=col.text())


def is_literal(node: object, value: object) -> bool:
    return isinstance(node, Literal) and node.value == value and type(node.value) is type(value)


# -- comparison operators -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "op"),
    [
        (lambda c: c == "x", "="),
        (lambda c: c != "x", "!="),
        (lambda c: c < "x", "<"),
        (lambda c: c <= "x", "<="),
        (lambda c: c > "x", ">"),
        (lambda c: c >= "x", ">="),
    ],
)
def test_comparison_operators_build_compare_nodes(build, op):
    node = build(todos.title)
    assert isinstance(node, Compare)
    assert node.op == op
    assert node.left is todos.title
    assert is_literal(node.right, "x")


@pytest.mark.parametrize(
    ("build", "op"),
    [
        (lambda c: "x" == c, "="),
        (lambda c: "x" != c, "!="),
        (lambda c: "x" < c, ">"),  # Python reflects: c > "x"
        (lambda c: "x" <= c, ">="),
        (lambda c: "x" > c, "<"),
        (lambda c: "x" >= c, "<="),
    ],
)
def test_literal_on_the_left_is_reflected(build, op):
    node = build(todos.title)
    assert isinstance(node, Compare)
    assert node.op == op
    assert node.left is todos.title
    assert is_literal(node.right, "x")


def test_column_against_column():
    node = todos.title < todos.owner
    assert isinstance(node, Compare)
    assert node.op == "<"
    assert node.left is todos.title
    assert node.right is todos.owner


def test_eq_none_is_is_null():
    for node in (todos.owner == None, None == todos.owner, eq(todos.owner, None)):  # noqa: E711
        assert isinstance(node, IsNull)
        assert node.expr is todos.owner
        assert node.negated is False


def test_ne_none_is_is_not_null():
    for node in (todos.owner != None, None != todos.owner, ne(todos.owner, None)):  # noqa: E711
        assert isinstance(node, IsNull)
        assert node.expr is todos.owner
        assert node.negated is True


def test_eq_with_none_first_is_is_null_too():
    node = eq(None, todos.owner)
    assert isinstance(node, IsNull)
    assert node.expr is todos.owner
    assert node.negated is False
    node = ne(None, todos.owner)
    assert isinstance(node, IsNull)
    assert node.negated is True


def test_ordering_against_none_stays_a_comparison():
    # Only == and != turn into IS [NOT] NULL; `< None` is unknown for every row, as in SQL.
    node = todos.rank < None
    assert isinstance(node, Compare)
    assert is_literal(node.right, None)


def test_is_null_methods():
    assert isinstance(todos.owner.is_null(), IsNull)
    assert todos.owner.is_null().negated is False
    assert todos.owner.is_not_null().negated is True
    assert todos.owner.is_not_null().expr is todos.owner


@pytest.mark.parametrize(
    ("fn", "op"), [(eq, "="), (ne, "!="), (lt, "<"), (le, "<="), (gt, ">"), (ge, ">=")]
)
def test_function_forms(fn, op):
    node = fn(todos.rank, 3)
    assert isinstance(node, Compare)
    assert node.op == op
    assert node.left is todos.rank
    assert is_literal(node.right, 3)
    # The literal may come first; it stays first.
    node = fn(3, todos.rank)
    assert isinstance(node, Compare)
    assert node.op == op
    assert is_literal(node.left, 3)
    assert node.right is todos.rank


# -- logic ---------------------------------------------------------------------------------


def test_and_or_not_operators():
    a, b, c = todos.done == True, todos.rank > 1, todos.owner.is_null()  # noqa: E712
    both = a & b
    assert isinstance(both, And)
    assert both.items == (a, b)
    either = a | b
    assert isinstance(either, Or)
    assert either.items == (a, b)
    negated = ~a
    assert isinstance(negated, Not)
    assert negated.item is a
    # Chains flatten into one node.
    assert (a & b & c).items == (a, b, c)
    assert (a | b | c).items == (a, b, c)
    # Mixed chains keep their structure (& binds tighter than |).
    mixed = a | b & c
    assert isinstance(mixed, Or)
    assert mixed.items[0] is a
    assert isinstance(mixed.items[1], And)


def test_function_logic_forms():
    a, b, c = todos.done == True, todos.rank > 1, todos.owner.is_null()  # noqa: E712
    assert isinstance(and_(a, b, c), And)
    assert and_(a, b, c).items == (a, b, c)
    assert and_(a).items == (a,)
    assert isinstance(or_(a, b), Or)
    assert or_(a, b).items == (a, b)
    assert isinstance(not_(a), Not)
    assert not_(a).item is a
    assert and_(and_(a, b), c).items == (a, b, c)


def test_logic_needs_conditions():
    with pytest.raises(QueryError, match=r"and_\(\) needs at least one condition"):
        and_()
    with pytest.raises(QueryError, match=r"or_\(\) needs at least one condition"):
        or_()
    with pytest.raises(QueryError, match=r"^& combines conditions, got True$"):
        (todos.done == True) & True  # noqa: E712
    with pytest.raises(QueryError, match=r"^& combines conditions, got 1$"):
        1 & (todos.done == True)  # noqa: E712
    with pytest.raises(QueryError, match=r"^\| combines conditions, got 'x'$"):
        (todos.done == True) | "x"  # noqa: E712
    with pytest.raises(QueryError, match=r"^and_ combines conditions, got True$"):
        and_(todos.done == True, True)  # noqa: E712
    with pytest.raises(QueryError, match=r"^or_ combines conditions, got None$"):
        or_(None)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"^not_ combines conditions, got False$"):
        not_(False)  # type: ignore[arg-type]


def test_bool_of_an_expression_is_an_error_with_a_hint():
    cond = todos.done == True  # noqa: E712
    with pytest.raises(QueryError, match=r"has no truth value: combine conditions with & \| ~"):
        bool(cond)
    with pytest.raises(QueryError, match=r"\(not and/or/not\)"):
        if cond:
            pass
    with pytest.raises(QueryError, match="no truth value"):
        _ = cond and todos.rank > 1
    with pytest.raises(QueryError, match="no truth value"):
        _ = not cond
    with pytest.raises(QueryError, match="no truth value"):
        _ = 1 < todos.rank < 5  # a chained comparison is an implicit `and`
    with pytest.raises(
        QueryError, match=re.escape("(<Column todos.done boolean> = Literal(True))")
    ):
        bool(cond)


def test_expressions_are_hashable():
    cond = todos.done == True  # noqa: E712
    assert len({cond, todos.title, todos.title}) == 2


# -- in_ and like --------------------------------------------------------------------------


def test_in_():
    node = todos.rank.in_([1, None, 3])
    assert isinstance(node, InList)
    assert node.expr is todos.rank
    assert [v.value for v in node.values] == [1, None, 3]  # type: ignore[attr-defined]
    assert todos.rank.in_([]).values == ()
    assert len(todos.rank.in_(x for x in range(4)).values) == 4
    assert len(todos.rank.in_({7}).values) == 1
    # Columns may appear in the list.
    assert todos.title.in_([todos.owner]).values == (todos.owner,)


@pytest.mark.parametrize("bad", ["abc", b"abc", todos.title])
def test_in_needs_a_list(bad):
    with pytest.raises(QueryError, match=r"in_\(\) takes a list of values, got"):
        todos.title.in_(bad)


def test_like_and_ilike():
    node = todos.title.like("a%_\\%")
    assert isinstance(node, Like)
    assert node.expr is todos.title
    assert node.pattern == "a%_\\%"
    assert node.case_sensitive is True
    node = todos.title.ilike("A%")
    assert isinstance(node, Like)
    assert node.case_sensitive is False


@pytest.mark.parametrize("bad", [None, 1, b"a%"])
def test_like_pattern_must_be_a_string(bad):
    with pytest.raises(QueryError, match=r"a like pattern must be a string, got"):
        todos.title.like(bad)
    with pytest.raises(QueryError, match=r"a like pattern must be a string, got"):
        todos.title.ilike(bad)


def test_orderings():
    assert isinstance(todos.title.desc(), Ordering)
    assert todos.title.desc().descending is True
    assert todos.title.asc().descending is False
    assert todos.title.desc().expr is todos.title
    assert not isinstance(todos.title.desc(), Expr)


def test_reprs():
    assert repr(todos.title == "x") == "(<Column todos.title text> = Literal('x'))"
    assert repr(~todos.owner.is_null()) == "~<Column todos.owner text>.is_null()"
    assert repr(todos.title.ilike("a%")) == "<Column todos.title text>.ilike('a%')"
    assert repr(todos.title.desc()) == "<Column todos.title text>.desc()"
    assert repr((todos.rank > 1) | (todos.rank < 0)) == (
        "((<Column todos.rank integer> > Literal(1)) | (<Column todos.rank integer> < Literal(0)))"
    )


def test_an_unbound_column_reference_has_no_table():
    ref = ColumnRef()
    with pytest.raises(QueryError, match="this column is not part of a table yet"):
        ref.table  # noqa: B018
    loose = col.text()
    with pytest.raises(QueryError, match="not part of a table"):
        select(todos).where(loose == "x")


# -- select() ------------------------------------------------------------------------------


def test_select_a_table_reads_every_column():
    q = select(todos)
    assert isinstance(q, Select)
    assert q.table is todos
    assert q.columns == tuple(todos)
    assert q.where_ is None
    assert q.order == ()
    assert q.limit_ is None
    assert q.offset_ is None
    assert q.tables == frozenset({"todos"})


def test_select_columns():
    q = select(todos.title, todos.id)
    assert q.table is todos
    assert q.columns == (todos.title, todos.id)


def test_select_rejects_mixed_and_foreign_arguments():
    with pytest.raises(QueryError, match=r"select\(\) needs a table or columns"):
        select()
    with pytest.raises(
        QueryError, match=r"select\(\) reads one table: users\.name is not in 'todos'"
    ):
        select(todos.id, users.name)
    with pytest.raises(QueryError, match=r"takes one table or several columns, not a mix"):
        select(todos.id, todos)
    with pytest.raises(QueryError, match=r"takes one table or several columns, not a mix"):
        select(todos, users)
    with pytest.raises(QueryError, match=r"select\(\) takes a table or its columns, got 'title'"):
        select("title")  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"takes a table or its columns"):
        select(todos.title == "x")  # type: ignore[arg-type]


def test_where_chaining_ands():
    a, b, c = todos.done == False, todos.rank > 1, todos.title.like("x%")  # noqa: E712
    q = select(todos).where(a)
    assert q.where_ is a
    q2 = q.where(b)
    assert isinstance(q2.where_, And)
    assert q2.where_.items == (a, b)
    q3 = q2.where(c)
    assert q3.where_.items == (a, b, c)  # type: ignore[union-attr]
    # An Or stays one item of the conjunction.
    q4 = select(todos).where(a | b).where(c)
    assert isinstance(q4.where_, And)
    assert isinstance(q4.where_.items[0], Or)


@pytest.mark.parametrize("bad", [True, None, "done = 1", todos.title.desc()])
def test_where_takes_conditions(bad):
    with pytest.raises(
        QueryError, match=r"where\(\) takes a condition such as todos\.done == False"
    ):
        select(todos).where(bad)


def test_where_rejects_other_tables_columns_anywhere_in_the_tree():
    msg = r"users\.name is not a column of 'todos': a query reads one table"
    for cond in (
        users.name == "x",
        (todos.done == True) & ~(users.name == "x"),  # noqa: E712
        todos.title.in_(["a", users.name]),
        users.name.like("a%"),
        users.name.is_null(),
        todos.title == users.name,
    ):
        with pytest.raises(QueryError, match=msg):
            select(todos).where(cond)


def test_order_by():
    q = select(todos).order_by(todos.title, todos.done.desc()).order_by(todos.id.asc())
    assert [(o.expr, o.descending) for o in q.order] == [
        (todos.title, False),
        (todos.done, True),
        (todos.id, False),
    ]
    assert all(isinstance(o, Ordering) for o in q.order)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("title", r"order_by\(\) takes columns or column\.desc\(\), got 'title'"),
        (1, r"order_by\(\) takes columns or column\.desc\(\), got 1"),
        (todos.rank > 1, r"order_by\(\) takes columns, got \("),
        ((todos.rank > 1).desc(), r"order_by\(\) takes columns, got \("),
        (users.name, r"users\.name is not a column of 'todos'"),
        (users.name.desc(), r"users\.name is not a column of 'todos'"),
    ],
)
def test_order_by_rejects_anything_but_this_tables_columns(bad, message):
    with pytest.raises(QueryError, match=message):
        select(todos).order_by(bad)


def test_limit_and_offset():
    q = select(todos).limit(10).offset(0)
    assert q.limit_ == 10
    assert q.offset_ == 0
    assert select(todos).limit(0).limit_ == 0
    # The last call wins.
    assert select(todos).limit(3).limit(5).limit_ == 5


@pytest.mark.parametrize("bad", [-1, 1.5, True, False, "3", None])
def test_limit_and_offset_must_be_non_negative_integers(bad):
    with pytest.raises(
        QueryError, match=rf"^limit must be a non-negative integer, got {re.escape(repr(bad))}$"
    ):
        select(todos).limit(bad)
    with pytest.raises(
        QueryError, match=rf"^offset must be a non-negative integer, got {re.escape(repr(bad))}$"
    ):
        select(todos).offset(bad)


def test_statements_are_immutable_values():
    base = select(todos)
    filtered = base.where(todos.done == False)  # noqa: E712
    ordered = filtered.order_by(todos.title)
    limited = ordered.limit(5)
    offset = limited.offset(2)
    chain = [base, filtered, ordered, limited, offset]
    assert len({id(s) for s in chain}) == len(chain)
    # Each step left the one before it alone.
    assert base.where_ is None and base.order == () and base.limit_ is None
    assert filtered.order == ()
    assert ordered.limit_ is None
    assert limited.offset_ is None
    assert offset.limit_ == 5 and offset.offset_ == 2
    assert offset.where_ is filtered.where_
    # A kept query can be extended two ways independently.
    mine = filtered.where(todos.owner == "me")
    theirs = filtered.where(todos.owner == "them")
    assert mine.where_ is not theirs.where_
    assert filtered.where_ is not None and not isinstance(filtered.where_, And)
    with pytest.raises(AttributeError):
        base.foo = 1  # type: ignore[attr-defined]


def test_select_repr():
    q = (
        select(todos.id, todos.title)
        .where(todos.done == False)  # noqa: E712
        .order_by(todos.title.desc())
        .limit(3)
        .offset(1)
    )
    assert repr(q) == (
        "select(todos: id, title).where((<Column todos.done boolean> = Literal(False)))"
        ".order_by(<Column todos.title text>.desc()).limit(3).offset(1)"
    )


# -- write statements ----------------------------------------------------------------------


def test_write_statements_hold_their_parts():
    ins = Insert(todos, {"id": "1", "title": "t"}, upsert=True)
    assert (ins.table, ins.row, ins.upsert) == (todos, {"id": "1", "title": "t"}, True)
    cond = todos.id == "1"
    upd = Update(todos, {"title": "u"}, cond)
    assert (upd.table, upd.values, upd.where) == (todos, {"title": "u"}, cond)
    dele = Delete(todos, cond)
    assert (dele.table, dele.where) == (todos, cond)


@pytest.mark.parametrize("dialect", [SQLiteDialect(), PostgresDialect()], ids=["sqlite", "pg"])
def test_write_statements_reject_other_tables_columns(dialect):
    # Columns compile by bare name, so users.id would silently mean todos.id.
    with pytest.raises(QueryError, match=r"users\.id is not a column of 'todos'"):
        dialect.compile(Update(todos, {"title": "u"}, users.id == "1"))
    with pytest.raises(QueryError, match=r"users\.id is not a column of 'todos'"):
        dialect.compile(Delete(todos, (todos.id == "1") | users.id.in_(["2"])))


def test_where_takes_a_bare_column_only_if_it_is_boolean():
    flags = table("flags", id=col.id(), on=col.boolean(), label=col.text())
    assert select(flags).where(flags.on).where_ is flags.on
    with pytest.raises(QueryError, match=r"where\(flags\.label\) needs a comparison"):
        select(flags).where(flags.label)
    with pytest.raises(QueryError, match=r"where\(\) takes a condition"):
        select(flags).where(flags.on.desc())  # type: ignore[arg-type]
