"""Compile the store's query AST (hutong.store.query) to SQL over the index tables.

Every user value is a bound parameter; identifiers in the SQL text come only
from the fixed schema, so no search input can change the statement's shape.
Semantics follow FHIR R4 search.html (prefixes §3.1.1.4, string §3.1.1.7,
token §3.1.1.5, reference §3.1.1.6, chaining §3.1.1.7.3, _has §3.1.1.7.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hutong.errors import NotSupported
from hutong.store.query import (
    AccessScope,
    Chain,
    Clause,
    Cursor,
    Has,
    Query,
    RangeMatch,
    RefMatch,
    SortKey,
    StringMatch,
    TokenMatch,
    UriMatch,
)
from hutong.store.schema import INDEX_TABLES

ParamIds = Callable[[str, str], int]
HIGH_STR = "\U0010ffff"
BIG = 1e300


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _range_sql(lo_col: str, hi_col: str, m: RangeMatch, args: list[Any]) -> str:
    """Date/lastUpdated comparison of a stored range [lo_col, hi_col) with the value's range.

    search.html#prefix: eq = target range fully inside the value's range;
    gt/lt = the range above/below the value intersects the target; ge/le add eq.
    """
    p = m.prefix
    if p == "eq":
        args += [m.lo, m.hi]
        return f"({lo_col} >= ? AND {hi_col} <= ?)"
    if p == "ne":
        args += [m.lo, m.hi]
        return f"NOT ({lo_col} >= ? AND {hi_col} <= ?)"
    if p == "gt":
        args.append(m.hi)
        return f"({hi_col} > ?)"
    if p == "lt":
        args.append(m.lo)
        return f"({lo_col} < ?)"
    if p == "ge":
        args += [m.hi, m.lo, m.hi]
        return f"({hi_col} > ? OR ({lo_col} >= ? AND {hi_col} <= ?))"
    if p == "le":
        args += [m.lo, m.lo, m.hi]
        return f"({lo_col} < ? OR ({lo_col} >= ? AND {hi_col} <= ?))"
    if p == "sa":
        args.append(m.hi)
        return f"({lo_col} >= ?)"
    if p == "eb":
        args.append(m.lo)
        return f"({hi_col} <= ?)"
    # ap: overlap with the value's range widened by 10% of its distance from now
    # (search.html leaves the gap to the server).
    width = max((m.hi - m.lo), abs(m.hi - m.lo) * 0.1)
    args += [m.hi + width, m.lo - width]
    return f"({lo_col} < ? AND {hi_col} > ?)"


def _number_sql(col: str, m: RangeMatch, args: list[Any]) -> str:
    """search.html#number: eq/ne use the value's implicit precision range."""
    p = m.prefix
    if p == "eq":
        args += [m.lo, m.hi]
        return f"({col} >= ? AND {col} < ?)"
    if p == "ne":
        args += [m.lo, m.hi]
        return f"NOT ({col} >= ? AND {col} < ?)"
    if p in ("gt", "sa"):
        args.append(m.value)
        return f"({col} > ?)"
    if p in ("lt", "eb"):
        args.append(m.value)
        return f"({col} < ?)"
    if p == "ge":
        args.append(m.value)
        return f"({col} >= ?)"
    if p == "le":
        args.append(m.value)
        return f"({col} <= ?)"
    d = abs(m.value) * 0.1
    args += [m.value - d, m.value + d]
    return f"({col} >= ? AND {col} <= ?)"


class Protector(Protocol):
    """Blind indexes (hutong.security.blindindex): which parameters hold keyed
    digests instead of values, and the digest a searched value must equal."""

    def protects(self, type: str, name: str) -> bool: ...

    def token(self, m: TokenMatch) -> TokenMatch: ...

    def string(self, name: str, m: StringMatch) -> tuple[str, str]: ...  # (column, digest)

    def refuse_sort(self, name: str) -> None: ...

    def text(self, norm: str) -> str: ...  # the digest a token :text search looks for in the text column


def _tree(op: str, parts: list[str]) -> str:
    """``parts`` joined by ``op`` as a balanced tree: SQLite refuses an expression
    nested deeper than 1000 ("Expression tree is too large"), which a flat
    ``a OR b OR ...`` of a few hundred search values reached (issue 12, finding
    17).  Placeholders keep their order, so the bound arguments still match."""
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    return f"({_tree(op, parts[:mid])} {op} {_tree(op, parts[mid:])})"


def _match_sql(ptype: str, m: Any, args: list[Any], protected: tuple[Protector, str] | None = None,
               blind_text: Protector | None = None) -> str:
    """``protected``: (protector, parameter name) when the parameter's index rows are digests.
    ``blind_text``: set when every token's text (display, CodeableConcept.text) is
    stored as a list of digests (issue 12, finding 11): ``:text`` looks for one of them."""
    if ptype == "token":
        assert isinstance(m, TokenMatch)
        if protected is not None:
            m = protected[0].token(m)
        if m.text is not None:
            # Digests are hex between spaces: a LIKE for one cannot match across two.
            args.append("%" + (blind_text.text(m.text) if blind_text is not None else _like_escape(m.text)) + "%")
            return "(text LIKE ? ESCAPE '\\')"
        parts = []
        if m.code is not None:
            parts.append("code = ?")
            args.append(m.code)
        if m.system == "":
            parts.append("system IS NULL")
        elif m.system is not None:
            parts.append("system = ?")
            args.append(m.system)
        return "(" + " AND ".join(parts or ["1=1"]) + ")"
    if ptype == "string":
        assert isinstance(m, StringMatch)
        if protected is not None:
            col, digest = protected[0].string(protected[1], m)
            args.append(digest)
            return f"({col} = ?)"
        if m.mode == "exact":
            args.append(m.value)
            return "(exact = ?)"
        if m.mode == "contains":
            args.append("%" + _like_escape(m.value) + "%")
            return "(norm LIKE ? ESCAPE '\\')"
        args += [m.value, m.value + HIGH_STR]
        return "(norm >= ? AND norm < ?)"
    if ptype == "date":
        assert isinstance(m, RangeMatch)
        return _range_sql("lo", "hi", m, args)
    if ptype in ("number", "quantity"):
        assert isinstance(m, RangeMatch)
        sql = _number_sql("value", m, args)
        if ptype == "quantity":
            if m.code:
                sql += " AND code = ?"
                args.append(m.code)
            if m.system:
                sql += " AND system = ?"
                args.append(m.system)
            sql = f"({sql})"
        return sql
    if ptype == "reference":
        assert isinstance(m, RefMatch)
        if m.url is not None:
            args.append(m.url)
            return "(ref = ?)"
        if m.target_type is not None:
            args += [m.target_id, m.target_type]
            return "(target_id = ? AND target_type = ?)"
        args.append(m.target_id)
        return "(target_id = ?)"
    if ptype == "uri":
        assert isinstance(m, UriMatch)
        if m.mode == "exact":
            args.append(m.value)
            return "(uri = ?)"
        if m.mode == "below":
            args += [m.value, m.value + HIGH_STR]
            return "(uri >= ? AND uri < ?)"
        args.append(m.value)
        return "(substr(?, 1, length(uri)) = uri)"
    raise NotSupported("HT-0022", f"unsupported parameter type {ptype}")


class Compiler:
    def __init__(self, param_id: ParamIds, protector: Protector | None = None) -> None:
        self.param_id = param_id
        self.protector = protector  # set by hutong.fhir.assembly when blind indexes are on

    def _protected(self, type: str, name: str) -> tuple[Protector, str] | None:
        pr = self.protector
        return (pr, name) if pr is not None and pr.protects(type, name) else None

    def token_code(self, type: str, name: str, system: str, code: str) -> str:
        """The stored ``code`` of token ``system|code`` (for statements written outside this compiler)."""
        pr = self._protected(type, name)
        if pr is None:
            return code
        stored = pr[0].token(TokenMatch(system, code)).code
        assert stored is not None
        return stored

    # ----------------------------------------------------------- clauses
    @staticmethod
    def _names_records(c: Clause | Has) -> bool:
        """A clause that names particular records (a reference to given targets, e.g.
        ``patient=``; an identifier), so its rows are few in any region: the one a
        search is driven from (:meth:`where`)."""
        if isinstance(c, Has) or c.chain is not None or c.missing is not None or c.negate:
            return False
        p = c.param
        if p.ptype == "reference":
            return all(isinstance(m, RefMatch) and (m.target_id or m.url) for m in c.matches)
        if p.ptype == "token" and p.name == "identifier":
            return all(isinstance(m, TokenMatch) and m.code is not None and m.text is None for m in c.matches)
        return False

    def clause(self, c: Clause | Has, alias: str, args: list[Any], correlated: bool = False) -> str:
        """``correlated``: checked per candidate row through the table's res_pk index
        instead of as a list of every matching row (:meth:`where` says when)."""
        if isinstance(c, Has):
            sub_args: list[Any] = []
            inner = self.clause(c.clause, "s", sub_args)
            args += [self.param_id(c.source_type, c.ref_param.name), c.target_type, c.source_type, *sub_args]
            return (
                f"{alias}.fhir_id IN (SELECT ir.target_id FROM idx_reference ir WHERE ir.param_id = ? "
                f"AND ir.target_type = ? AND ir.res_pk IN (SELECT s.pk FROM resource s "
                f"WHERE s.type = ? AND s.deleted = 0 AND {inner}))"
            )
        p = c.param
        if p.ptype == "special":
            raise NotSupported("HT-0022", f"parameter {p.name} cannot be used here")
        table, _cols = INDEX_TABLES[p.ptype]
        pid = self.param_id(p.type, p.name)
        if c.missing is not None:
            args.append(pid)
            if c.missing:  # correlated: NOT IN would list every row that has the parameter
                return f"NOT EXISTS (SELECT 1 FROM {table} n WHERE n.res_pk = {alias}.pk AND +n.param_id = ?)"
            if correlated:
                return f"EXISTS (SELECT 1 FROM {table} n WHERE n.res_pk = {alias}.pk AND +n.param_id = ?)"
            return f"{alias}.pk IN (SELECT res_pk FROM {table} WHERE param_id = ?)"
        if c.chain is not None:
            return self._chain(pid, c.chain, alias, args)
        args.append(pid)
        prot = self._protected(p.type, p.name)
        alts = _tree("OR", [_match_sql(p.ptype, m, args, prot, self.protector) for m in c.matches])
        if c.negate:
            # :not (and the golden-record exclusion of every Patient search, hutong.fhir.service)
            # is checked per candidate row through the res_pk index ("+" keeps the planner off
            # the (param_id, code) index, which would scan every golden record per row);
            # "pk NOT IN (SELECT ...)" listed every matching row of the table first.
            return (f"NOT EXISTS (SELECT 1 FROM {table} n WHERE n.res_pk = {alias}.pk AND +n.param_id = ? "
                    f"AND ({alts}))")
        if correlated:
            return f"EXISTS (SELECT 1 FROM {table} n WHERE n.res_pk = {alias}.pk AND +n.param_id = ? AND ({alts}))"
        return f"{alias}.pk IN (SELECT res_pk FROM {table} WHERE param_id = ? AND ({alts}))"

    def _chain(self, pid: int, chain: Chain, alias: str, args: list[Any]) -> str:
        ors = []
        args.append(pid)
        for t in chain.target_types:
            sub = chain.clause
            sub = Clause(
                param=type(sub.param)(t, sub.param.name, sub.param.ptype),
                matches=sub.matches,
                negate=sub.negate,
                missing=sub.missing,
                chain=sub.chain,
            )
            inner_alias = f"t{len(args)}"
            args.append(t)
            args.append(t)
            inner = self.clause(sub, inner_alias, args)
            ors.append(
                f"(ir.target_type = ? AND ir.target_id IN (SELECT {inner_alias}.fhir_id FROM resource {inner_alias} "
                f"WHERE {inner_alias}.type = ? AND {inner_alias}.deleted = 0 AND {inner}))"
            )
        return (
            f"{alias}.pk IN (SELECT ir.res_pk FROM idx_reference ir WHERE ir.param_id = ? AND ("
            + " OR ".join(ors)
            + "))"
        )

    def where(self, q: Query, alias: str, args: list[Any]) -> str:
        parts = [f"{alias}.type = ?", f"{alias}.deleted = 0"]
        args += [q.type]
        if q.ids is not None:
            parts.append(f"{alias}.fhir_id IN ({','.join('?' * len(q.ids))})" if q.ids else "1=0")
            args += list(q.ids)
        for m in q.last_updated:
            # lastUpdated is an instant at ms precision: the range [t, t+1).
            parts.append(_range_sql(f"{alias}.last_updated", f"({alias}.last_updated + 1)", m, args))
        if q.compartment_patient is not None:
            parts.append(f"{alias}.pk IN (SELECT res_pk FROM compartment WHERE patient_id = ?)")
            args.append(q.compartment_patient)
        # When the search names particular records (ids, a compartment, a reference to
        # given patients, an identifier), it is driven from them and every other clause is
        # checked per candidate row through its table's res_pk index.  As "pk IN (SELECT
        # ...)" SQLite lists each of them whole first: at 1M resources a date clause
        # (date=ge<90 days ago>) listed every Observation of the region's last 90 days
        # to keep six of one patient's (issue 14, Speed: 50 ms -> 4 ms).  Without such a
        # clause the lists stay, and SQLite picks which one drives.  PostgreSQL plans
        # both forms as the same semi-join.
        driver = None
        if q.ids is None and q.compartment_patient is None:
            driver = next((i for i, c in enumerate(q.clauses) if self._names_records(c)), None)
        driven = driver is not None or q.ids is not None or q.compartment_patient is not None
        clauses = [self.clause(c, alias, args, correlated=driven and i != driver) for i, c in enumerate(q.clauses)]
        if clauses:
            parts.append(_tree("AND", clauses))
        if q.scope is not None:
            # Last: its terms are correlated joins, checked only on the rows the clauses kept.
            parts.append(self.scope_sql(q.type, q.scope, alias, args))
        return " AND ".join(parts)

    def scope_sql(self, type: str, scope: AccessScope, alias: str, args: list[Any]) -> str:
        """The access policy as a WHERE term, so counts and pages never include
        a row the caller may not see (hutong.security.policy)."""
        ors = []
        for g in scope.grants:
            conds = []
            if g.patients:
                conds.append(f"{alias}.pk IN (SELECT res_pk FROM compartment WHERE patient_id IN "
                             f"({','.join('?' * len(g.patients))}))")
                args += list(g.patients)
            if g.managed_by is not None:
                conds.append(
                    f"EXISTS (SELECT 1 FROM compartment c JOIN resource p ON p.type = 'Patient' "
                    f"AND p.fhir_id = c.patient_id JOIN idx_reference x ON x.res_pk = p.pk AND x.param_id = ? "
                    f"AND x.target_type = 'Organization' AND x.target_id = ? WHERE c.res_pk = {alias}.pk)")
                args += [self.param_id("Patient", "organization"), g.managed_by]
            if g.golden and type == "Patient":
                conds.append(f"{alias}.fhir_id LIKE 'mpi-%'")
            if g.owner_org is not None and type == "Task":
                conds.append(f"EXISTS (SELECT 1 FROM idx_reference o WHERE o.res_pk = {alias}.pk AND o.param_id = ? "
                             "AND o.target_type = 'Organization' AND o.target_id = ?)")
                args += [self.param_id("Task", "owner"), g.owner_org]
            if not conds:
                continue
            term = "(" + " OR ".join(conds) + ")"
            if g.hide_labels:
                # meta.security codes are indexed as sent; ActCodes are upper-case, but
                # a sender's lower-case "psy" must not slip through.
                codes = sorted({v for x in g.hide_labels for v in (x, x.upper(), x.lower())})
                term = (f"({term} AND NOT EXISTS (SELECT 1 FROM idx_token t WHERE t.res_pk = {alias}.pk "
                        f"AND t.param_id = ? AND t.code IN ({','.join('?' * len(codes))})))")
                args += [self.param_id(type, "_security"), *codes]
            ors.append(term)
        return "(" + " OR ".join(ors) + ")" if ors else "1=0"

    # ----------------------------------------------------------- sorting & paging
    def sort_expr(self, s: SortKey, alias: str, args: list[Any]) -> str:
        p = s.param
        if p.ptype == "special":
            return f"{alias}.fhir_id" if p.name == "_id" else f"{alias}.last_updated"
        prot = self._protected(p.type, p.name)
        if prot is not None and p.ptype == "string":
            prot[0].refuse_sort(p.name)
        table, _ = INDEX_TABLES[p.ptype]
        col = {"string": "norm", "token": "code", "date": "hi" if s.descending else "lo", "reference": "ref",
               "quantity": "value", "number": "value", "uri": "uri"}[p.ptype]
        agg = "MAX" if s.descending else "MIN"
        # Missing values sort last in either direction.
        numeric = p.ptype in ("date", "quantity", "number")
        sentinel = (-BIG if s.descending else BIG) if numeric else ("" if s.descending else HIGH_STR)
        args += [self.param_id(p.type, p.name), sentinel]
        return f"COALESCE((SELECT {agg}({col}) FROM {table} WHERE res_pk = {alias}.pk AND param_id = ?), ?)"

    def page_sql(self, q: Query, select_cols: str) -> tuple[str, list[Any]]:
        """SELECT of one page (count + 1 rows, to know whether a next page exists)."""
        args: list[Any] = []
        sort_args: list[Any] = []
        keys = [self.sort_expr(s, "r", sort_args) for s in q.sort]
        where_args: list[Any] = []
        where = self.where(q, "r", where_args)
        backward = q.cursor.backward if q.cursor else False
        key_cols = "".join(f", {k} AS k{i}" for i, k in enumerate(keys))
        inner = f"SELECT {select_cols}{key_cols} FROM resource r WHERE {where}"
        args = sort_args + where_args
        cond = ""
        if q.cursor is not None:
            cond_args: list[Any] = []
            cond = " WHERE " + self._keyset(q.sort, q.cursor, cond_args)
            args += cond_args
        order = []
        for i, s in enumerate(q.sort):
            desc = s.descending != backward
            order.append(f"s.k{i} {'DESC' if desc else 'ASC'}")
        order.append(f"s.pk {'DESC' if backward else 'ASC'}")
        sql = f"SELECT * FROM ({inner}) s{cond} ORDER BY {', '.join(order)} LIMIT ?"
        args.append(q.count + 1)
        return sql, args

    def _keyset(self, sort: list[SortKey], cur: Cursor, args: list[Any]) -> str:
        ors = []
        n = len(sort)
        for i in range(n + 1):
            ands = []
            for j in range(i):
                ands.append(f"s.k{j} = ?")
                args.append(cur.keys[j])
            if i < n:
                after = sort[i].descending == cur.backward  # ascending forward => '>'
                ands.append(f"s.k{i} {'>' if after else '<'} ?")
                args.append(cur.keys[i])
            else:
                ands.append(f"s.pk {'<' if cur.backward else '>'} ?")
                args.append(cur.pk)
            ors.append("(" + " AND ".join(ands) + ")")
        return "(" + " OR ".join(ors) + ")"
