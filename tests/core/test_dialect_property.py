"""Property test: queries compiled by SQLiteDialect and run by a real SQLite return exactly what
an independent Python evaluator of the DSL's documented semantics returns.

The evaluator below is written from the semantics in DESIGN.md section 3 and docs/queries.md,
not from plasma_nb's code: SQL three-valued logic, ``== None`` meaning IS NULL, ``in_([])``
being false, ``like`` case-sensitive with ``%``, ``_`` and backslash escapes, ``ilike``
folding ASCII letters only, NULLs first ascending and last descending, text by code point.
"""

from __future__ import annotations

import operator
import re
import sqlite3
import string
from collections import Counter
from functools import reduce

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasma_nb import and_, col, eq, ge, gt, le, lt, ne, not_, or_, select, table
from plasma_nb.core import PostgresDialect, SQLiteDialect
from plasma_nb.core.query import Delete, Insert

# ASCII letters in both cases, non-ASCII letters whose case pairs must NOT fold ('ſ' and the
# KELVIN SIGN (U+212A) lower-case to ASCII 's' and 'k' in Unicode), every character that is special
# to LIKE or GLOB, a space and an astral character (one `_` must match it whole).
ALPHABET = "aAbBkKsS" + "éÉøØßſ\u212a" + "%_\\*?[]" + " " + "𝔸"
PATTERN_EXTRA = "%%__\\\\"

t = table(
    "t",
    id=col.id(),
    a=col.text(nullable=True),
    b=col.text(nullable=True),
    n=col.integer(nullable=True),
    r=col.real(nullable=True),
    f=col.boolean(nullable=True),
)
KINDS = {"id": "text", "a": "text", "b": "text", "n": "integer", "r": "real", "f": "boolean"}
NAMES = list(KINDS)
TEXT_COLUMNS = [name for name, kind in KINDS.items() if kind == "text"]
COLUMN_PAIRS = [
    ("a", "b"),
    ("b", "a"),
    ("a", "id"),
    ("id", "b"),
    ("a", "a"),
    ("n", "r"),
    ("r", "n"),
    ("n", "n"),
    ("f", "f"),
]

# One dialect for the whole run, so the shape cache is hit with many different literals.
SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()

# -- the independent evaluator -------------------------------------------------------------

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold_ascii(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def like_match(value: str, pattern: str, *, fold: bool) -> bool:
    """``%`` any run, ``_`` one code point, ``\\`` makes the next character literal, a
    trailing ``\\`` is itself. Matching walks the set of reachable positions in ``value``."""
    if fold:
        value, pattern = fold_ascii(value), fold_ascii(pattern)
    reach = {0}
    i = 0
    while i < len(pattern) and reach:
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            literal = pattern[i + 1]
            reach = {j + 1 for j in reach if j < len(value) and value[j] == literal}
            i += 2
            continue
        if ch == "%":
            reach = set(range(min(reach), len(value) + 1))
        elif ch == "_":
            reach = {j + 1 for j in reach if j < len(value)}
        else:
            reach = {j + 1 for j in reach if j < len(value) and value[j] == ch}
        i += 1
    return i >= len(pattern) and len(value) in reach


PY_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
DSL_FUNCS = {"==": eq, "!=": ne, "<": lt, "<=": le, ">": gt, ">=": ge}


def compare(left, op, right):
    """A comparison of two values, either of which may be NULL (None): unknown then."""
    if left is None or right is None:
        return None
    return PY_OPS[op](left, right)


def sql_and(values):
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


def sql_or(values):
    if any(v is True for v in values):
        return True
    if any(v is None for v in values):
        return None
    return False


def sql_not(value):
    return None if value is None else not value


def evaluate(node, row):
    """True, False or None (unknown) for ``node`` on ``row``."""
    kind = node[0]
    if kind == "cmp":
        _, form, op, name, literal = node
        value = row[name]
        if literal is None and op in ("==", "!="):
            # `x == None` (and `None == x`, `eq(x, None)`, `eq(None, x)`) is x IS NULL.
            return (value is None) if op == "==" else (value is not None)
        if form in ("op_swapped", "func_swapped"):
            return compare(literal, op, value)
        return compare(value, op, literal)
    if kind == "cmpcol":
        _, op, left, right = node
        return compare(row[left], op, row[right])
    if kind == "in":
        _, name, literals = node
        value = row[name]
        if not literals:
            return False
        if value is None:
            return None
        if any(v is not None and v == value for v in literals):
            return True
        return None if any(v is None for v in literals) else False
    if kind == "like":
        _, name, pattern, case_sensitive = node
        value = row[name]
        if value is None:
            return None
        return like_match(value, pattern, fold=not case_sensitive)
    if kind == "null":
        _, name, negated = node
        return (row[name] is not None) if negated else (row[name] is None)
    if kind == "and":
        return sql_and([evaluate(child, row) for child in node[2]])
    if kind == "or":
        return sql_or([evaluate(child, row) for child in node[2]])
    if kind == "not":
        return sql_not(evaluate(node[2], row))
    raise AssertionError(node)


def sort_rows(rows, order):
    """Sort by ``order`` [(name, descending)]: NULLs first ascending, last descending."""
    rows = list(rows)
    for name, descending in reversed(order):
        rows.sort(
            key=lambda r, name=name: (0, 0) if r[name] is None else (1, r[name]),
            reverse=descending,
        )
    return rows


def window(rows, limit, offset):
    start = offset or 0
    return rows[start:] if limit is None else rows[start : start + limit]


# -- building the same tree with the DSL ---------------------------------------------------


def build(node):
    kind = node[0]
    if kind == "cmp":
        _, form, op, name, literal = node
        column = getattr(t, name)
        if form == "op":
            return PY_OPS[op](column, literal)
        if form == "op_swapped":
            return PY_OPS[op](literal, column)  # Python reflects it onto the column
        if form == "func":
            return DSL_FUNCS[op](column, literal)
        return DSL_FUNCS[op](literal, column)
    if kind == "cmpcol":
        _, op, left, right = node
        return PY_OPS[op](getattr(t, left), getattr(t, right))
    if kind == "in":
        return getattr(t, node[1]).in_(list(node[2]))
    if kind == "like":
        _, name, pattern, case_sensitive = node
        column = getattr(t, name)
        return column.like(pattern) if case_sensitive else column.ilike(pattern)
    if kind == "null":
        _, name, negated = node
        column = getattr(t, name)
        return column.is_not_null() if negated else column.is_null()
    if kind in ("and", "or"):
        _, form, children = node
        built = [build(child) for child in children]
        if form == "func":
            return (and_ if kind == "and" else or_)(*built)
        return reduce(operator.and_ if kind == "and" else operator.or_, built)
    if kind == "not":
        _, form, child = node
        return not_(build(child)) if form == "func" else ~build(child)
    raise AssertionError(node)


# -- strategies ----------------------------------------------------------------------------

# Characters special to LIKE or GLOB come up often.
texts = st.text(alphabet=st.sampled_from(ALPHABET) | st.sampled_from("%_\\*?["), max_size=5)
integers = st.integers(-3, 3) | st.sampled_from([2**53, -(2**53), 1000])
reals = st.sampled_from([0.0, -0.0, 0.5, -1.5, 2.0, 3.0, 1e300, -5e-324]) | st.floats(
    -4, 4, allow_nan=False, allow_infinity=False
)
BASE = {"text": texts, "integer": integers, "real": reals, "boolean": st.booleans()}


def literals(kind, pools):
    """Literals for a column of ``kind``: often a value stored in the table, so that
    comparisons hit; an int is a fine literal for a real column."""
    base = BASE[kind] | st.integers(-3, 3) if kind == "real" else BASE[kind]
    pool = pools.get(kind)
    return st.sampled_from(pool) | base if pool else base


@st.composite
def derived_patterns(draw, pool):
    """A pattern made from a stored value, mostly by steps that keep it matching."""
    source = draw(st.sampled_from(pool))
    out = []
    for ch in source:
        how = draw(
            st.sampled_from(
                ["same"] * 5 + ["escape", "one", "one", "any", "any", "raw", "swap", "drop"]
            )
        )
        if how == "same":  # matches ch itself
            out.append("\\" + ch if ch in "%_\\" else ch)
        elif how == "escape":  # a backslash before any character makes it literal
            out.append("\\" + ch)
        elif how == "one":
            out.append("_")
        elif how == "any":
            out.append("%")
        elif how == "raw":  # a stored % or _ then acts as a wildcard, a \ as an escape
            out.append(ch)
        elif how == "swap":
            out.append(ch.swapcase())
    if draw(st.booleans()):
        out.insert(0, "%")
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(["%", "\\", "_"])))
    return "".join(out)


def conditions(pools):
    patterns = st.text(alphabet=ALPHABET + PATTERN_EXTRA, max_size=6)
    if pools["text"]:
        patterns = derived_patterns(pools["text"]) | patterns

    def maybe_null(kind):
        return st.none() | literals(kind, pools)

    cmp = st.sampled_from(NAMES).flatmap(
        lambda name: st.tuples(
            st.just("cmp"),
            st.sampled_from(["op", "op_swapped", "func", "func_swapped"]),
            st.sampled_from(list(PY_OPS)),
            st.just(name),
            maybe_null(KINDS[name]),
        )
    )
    cmpcol = st.sampled_from(COLUMN_PAIRS).flatmap(
        lambda pair: st.tuples(
            st.just("cmpcol"), st.sampled_from(list(PY_OPS)), st.just(pair[0]), st.just(pair[1])
        )
    )
    in_list = st.sampled_from(NAMES).flatmap(
        lambda name: st.tuples(
            st.just("in"), st.just(name), st.lists(maybe_null(KINDS[name]), max_size=4)
        )
    )
    like = st.tuples(st.just("like"), st.sampled_from(TEXT_COLUMNS), patterns, st.booleans())
    null = st.tuples(st.just("null"), st.sampled_from(NAMES), st.booleans())
    leaves = st.one_of(cmp, cmp, cmpcol, in_list, like, like, null)

    def extend(children):
        forms = st.sampled_from(["op", "func"])
        return st.one_of(
            st.tuples(st.just("and"), forms, st.lists(children, min_size=1, max_size=3)),
            st.tuples(st.just("or"), forms, st.lists(children, min_size=1, max_size=3)),
            st.tuples(st.just("not"), forms, children),
        )

    return st.recursive(leaves, extend, max_leaves=5)


@st.composite
def scenarios(draw):
    # A small vocabulary per example, so that values repeat across rows and columns: equal
    # values make comparisons, IN lists and ORDER BY ties interesting.
    vocabulary = draw(st.lists(texts, min_size=1, max_size=6, unique=True))
    words = st.sampled_from(vocabulary) | texts
    values = {"text": words, "integer": integers, "real": reals, "boolean": st.booleans()}
    ids = draw(st.lists(words, unique=True, min_size=3, max_size=14))
    rows = []
    for id_ in ids:
        row = {"id": id_}
        for name in NAMES[1:]:
            # NULL about a third of the time.
            row[name] = draw(st.none() | values[KINDS[name]] | values[KINDS[name]])
        rows.append(t._check_row(row))  # canonical values: reals as float
    pools = {
        kind: sorted({r[name] for r in rows for name in NAMES if KINDS[name] == kind} - {None})
        for kind in BASE
    }
    filters = [draw(conditions(pools)) for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2])))]
    order = draw(
        st.lists(
            st.tuples(st.sampled_from(NAMES), st.sampled_from(["plain", "asc", "desc"])), max_size=3
        )
    )
    if draw(st.booleans()):
        order.append(("id", draw(st.sampled_from(["plain", "asc", "desc"]))))
    limit = draw(st.none() | st.integers(0, 8))
    offset = draw(st.none() | st.integers(0, 8))
    columns = draw(st.none() | st.permutations(NAMES))
    return rows, filters, order, limit, offset, columns


def make_query(filters, order, limit, offset, columns):
    q = select(t) if columns is None else select(*(getattr(t, name) for name in columns))
    for node in filters:
        q = q.where(build(node))
    terms = []
    for name, how in order:
        column = getattr(t, name)
        terms.append(column if how == "plain" else getattr(column, how)())
    if terms:
        q = q.order_by(*terms)
    if limit is not None:
        q = q.limit(limit)
    if offset is not None:
        q = q.offset(offset)
    return q


def as_tuple(row):
    return tuple(row[name] for name in NAMES)


def check_types(row):
    assert isinstance(row["id"], str)
    for name in ("a", "b"):
        assert row[name] is None or type(row[name]) is str
    assert row["n"] is None or type(row["n"]) is int
    assert row["r"] is None or type(row["r"]) is float
    assert row["f"] is None or type(row["f"]) is bool


def check_postgres_agrees_on_parameters(query, compiled):
    """No Postgres here, but its compilation must number the same parameters in order."""
    pg = POSTGRES.compile(query)
    marks = [int(m) for m in re.findall(r"\$(\d+)", pg.sql)]
    assert marks == list(range(1, len(marks) + 1))
    assert len(marks) == len(pg.params) == len(compiled.params) == compiled.sql.count("?")
    for mine, theirs in zip(compiled.params, pg.params, strict=True):
        if isinstance(theirs, bool):
            assert mine == int(theirs)
        elif isinstance(theirs, str) and isinstance(mine, str):
            continue  # like patterns are spelled per engine
        else:
            assert mine == theirs and type(mine) is type(theirs)


TRUTH = {True: 1, False: 0, None: None}


def truth_table(conn, condition):
    """{id: 1, 0 or None}: the condition's value on each row, as SQLite computes it."""
    compiled = SQLITE.compile(select(t.id).where(condition))
    head, where = compiled.sql.split(" WHERE ", 1)
    assert head == 'SELECT "id" FROM "t"'
    sql = f'SELECT "id", CASE WHEN {where} THEN 1 WHEN NOT {where} THEN 0 END FROM "t"'
    return dict(conn.execute(sql, compiled.params * 2).fetchall())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_sqlite_agrees_with_the_python_evaluator(scenario):
    rows, filters, order, limit, offset, columns = scenario
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(SQLITE.create_table_sql(t))
        for row in rows:
            insert = SQLITE.compile(Insert(t, row, upsert=False))
            conn.execute(insert.sql, insert.params)

        query = make_query(filters, order, limit, offset, columns)
        compiled = SQLITE.compile(query)
        check_postgres_agrees_on_parameters(query, compiled)
        got = [compiled.decode(values) for values in conn.execute(compiled.sql, compiled.params)]
        for row in got:
            check_types(row)
            if columns is not None:
                assert list(row) == list(columns)

        matching = [r for r in rows if all(evaluate(node, r) is True for node in filters)]
        order_spec = [(name, how == "desc") for name, how in order]
        expected = window(sort_rows(matching, order_spec), limit, offset)
        got_tuples = [as_tuple(r) for r in got]
        if any(name == "id" for name, _ in order_spec):
            # The key is unique, so the order is total: the lists must be identical.
            assert got_tuples == [as_tuple(r) for r in expected]
        else:
            # Ties may come back in any order: the rows at each position must have the same
            # sort key, and the rows must be ones that match.
            def keys(rs):
                return [tuple(r[name] for name, _ in order_spec) for r in rs]

            assert keys(got) == keys(expected)
            assert len(got) == len(expected)
            assert not Counter(got_tuples) - Counter(as_tuple(r) for r in matching)
            if limit is None and offset is None:
                assert Counter(got_tuples) == Counter(as_tuple(r) for r in matching)

        # Each condition's three-valued answer, row by row: unknown must stay apart from false.
        for node in filters:
            assert truth_table(conn, build(node)) == {
                r["id"]: TRUTH[evaluate(node, r)] for r in rows
            }

        # The same conditions drive DELETE: exactly the matching rows go.
        if filters:
            delete = SQLITE.compile(Delete(t, and_(*(build(node) for node in filters))))
            deleted = conn.execute(delete.sql, delete.params).rowcount
            assert deleted == len(matching)
            left = {r[0] for r in conn.execute('SELECT "id" FROM "t"')}
            assert left == {r["id"] for r in rows} - {r["id"] for r in matching}
    finally:
        conn.close()


@st.composite
def like_cases(draw):
    words = draw(st.lists(texts, min_size=1, max_size=8, unique=True))
    patterns = derived_patterns(words) | st.text(alphabet=ALPHABET + PATTERN_EXTRA, max_size=6)
    return words, draw(patterns), draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(like_cases())
def test_like_and_ilike_agree_with_the_python_matcher(case):
    """Matching alone, on many more patterns that hit: on a plain column and on the key (whose
    index SQLite may use to narrow a GLOB to a range)."""
    words, pattern, case_sensitive = case
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(SQLITE.create_table_sql(t))
        rows = [{"id": w, "a": w} for w in words] + [{"id": "~null~", "a": None}]
        for row in rows:
            insert = SQLITE.compile(Insert(t, row, upsert=False))
            conn.execute(insert.sql, insert.params)
        for name in ("a", "id"):
            column = getattr(t, name)
            condition = column.like(pattern) if case_sensitive else column.ilike(pattern)
            node = ("like", name, pattern, case_sensitive)
            assert truth_table(conn, condition) == {r["id"]: TRUTH[evaluate(node, r)] for r in rows}
    finally:
        conn.close()


# -- the evaluator's own checks (so a bug in it cannot hide one in the dialect) -------------


def test_like_match_reference_cases():
    assert like_match("abc", "abc", fold=False)
    assert not like_match("abc", "ABC", fold=False)
    assert like_match("abc", "ABC", fold=True)
    assert like_match("", "%", fold=False)
    assert not like_match("", "_", fold=False)
    assert like_match("𝔸", "_", fold=False)
    assert like_match("a%c", "a\\%c", fold=False)
    assert not like_match("abc", "a\\%c", fold=False)
    assert like_match("a_c", "a\\_c", fold=False)
    assert not like_match("abc", "a\\_c", fold=False)
    assert like_match("abc", "\\a\\b\\c", fold=False)
    assert like_match("a\\", "a\\", fold=False)  # a trailing backslash is literal
    assert like_match("a\\", "a\\\\", fold=False)
    assert not like_match("a", "a\\", fold=False)
    assert like_match("xay", "%a%", fold=False)
    assert like_match("é", "é", fold=True)
    assert not like_match("é", "É", fold=True)  # non-ASCII letters do not fold
    assert not like_match("s", "ſ", fold=True)
    assert not like_match("k", "\u212a", fold=True)  # KELVIN SIGN


def test_three_valued_logic_reference_cases():
    assert sql_and([True, None]) is None
    assert sql_and([False, None]) is False
    assert sql_or([True, None]) is True
    assert sql_or([False, None]) is None
    assert sql_not(None) is None
    row = {"a": None, "n": 2}
    assert evaluate(("in", "a", []), row) is False
    assert evaluate(("in", "a", ["x"]), row) is None
    assert evaluate(("in", "n", [1, None]), row) is None
    assert evaluate(("in", "n", [2, None]), row) is True
    assert evaluate(("in", "n", [1, 3]), row) is False
    assert evaluate(("cmp", "op", "==", "a", None), row) is True
    assert evaluate(("cmp", "func_swapped", "!=", "a", None), row) is False
    assert evaluate(("cmp", "op", "<", "n", None), row) is None
    assert evaluate(("cmp", "op_swapped", "<", "n", 1), row) is True
    assert sort_rows([{"x": 2}, {"x": None}, {"x": 1}], [("x", False)]) == [
        {"x": None},
        {"x": 1},
        {"x": 2},
    ]
    assert sort_rows([{"x": 2}, {"x": None}, {"x": 1}], [("x", True)]) == [
        {"x": 2},
        {"x": 1},
        {"x": None},
    ]
