"""m010_budget_functions: on PostgreSQL, the budget gate's three operations as functions.

``StoreSpendGate`` calls each as one statement (``SELECT ef_budget_reserve(...)``) in autocommit
mode: one round trip per operation instead of one per statement, and the usage rows stay locked
only while the function runs on the server, not across network hops. They do what the gate's
transactions did statement by statement (see ``elevenfactor.governance._gate_pg``):

- ``ef_budget_reserve``: the stored hold if its id exists; else release the expired holds of the
  organisation (at most 100), create missing usage rows, lock the usage rows in a fixed order
  (``budget_id``, ``window_key``, byte order), check every hard budget, then hold the amount in
  every window. Returns ``hold, amount, windows, soft, expires_at`` (the id existed),
  ``over, n, spent, reserved`` (the n-th window, 1-based, cannot cover it: nothing held, but
  the expired holds stay released) or ``ok, <soft budget ids>...``.
- ``ef_budget_commit``: charge the cost and release the hold (a hold never seen is recorded).
  Returns ``noop`` (already settled) or ``ok`` then ``budget_id, window_key, spent before, spent
  after`` for each window charged, for the alert thresholds.
- ``ef_budget_release``: give a held hold back; true if it was held.

Usage rows are always locked before hold rows. Amounts are written rounded to 1e-12 USD,
``reserved`` never below 0 (as Python's ``round(x, 12)``, except that an exact decimal tie
rounds away from zero rather than to even). Numbers go back as text, exact: with
``extra_float_digits`` above 0 a ``float8`` is written as the shortest string that reads back
as the same double.

Each function plans its statements once per connection (``plan_cache_mode =
force_generic_plan``): left to choose, PostgreSQL kept re-planning some of them on every call,
which cost more than running them.

Bodies avoid question marks and apostrophes: the store rewrites placeholders outside quotes,
and a dollar-quoted body is outside quotes to it.
"""

DIALECTS = ("postgresql",)

# The locked usage rows are kept in parallel arrays (ub, uw, us, ur: budget, window, spent,
# reserved; dirty: changed); this writes the changed ones back, rounded.
WRITE = """
    IF true = ANY(dirty) THEN
        UPDATE budget_usage AS u
            SET spent = round(d.s::text::numeric, 12)::double precision,
                reserved = greatest(0, round(d.r::text::numeric, 12))::double precision
            FROM unnest(ub, uw, us, ur, dirty) AS d(b, w, s, r, changed)
            WHERE d.changed AND u.budget_id = d.b AND u.window_key = d.w;
    END IF;
"""

# Lock the usage rows of (p_budgets[i], p_windows[i]) and of the windows in the JSON lists of
# e_windows, in the fixed order, into the arrays.
LOCK = """
    FOR r IN
        SELECT u.budget_id, u.window_key, u.spent, u.reserved FROM budget_usage AS u
        WHERE (u.budget_id, u.window_key) IN (
            SELECT t.b, t.w FROM unnest(p_budgets, p_windows) AS t(b, w)
            UNION ALL
            SELECT j.value ->> 0, j.value ->> 1
            FROM unnest(e_windows) AS x(raw), jsonb_array_elements(x.raw::jsonb) AS j
        )
        ORDER BY u.budget_id COLLATE "C", u.window_key COLLATE "C"
        FOR UPDATE OF u
    LOOP
        ub := ub || r.budget_id;
        uw := uw || r.window_key;
        us := us || r.spent;
        ur := ur || r.reserved;
        dirty := dirty || false;
    END LOOP;
"""

ROWS = """
    ub text[] := ARRAY[]::text[];
    uw text[] := ARRAY[]::text[];
    us double precision[] := ARRAY[]::double precision[];
    ur double precision[] := ARRAY[]::double precision[];
    dirty boolean[] := ARRAY[]::boolean[];
"""

_RESERVE = (
    """CREATE FUNCTION ef_budget_reserve(
    p_id text, p_org text, p_amount double precision, p_at double precision,
    p_expires double precision, p_run text, p_budgets text[], p_windows text[],
    p_limits double precision[], p_hard boolean[], p_windows_json text
) RETURNS text[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET extra_float_digits = 1 AS $$
DECLARE
    h record;
    r record;
    n integer := cardinality(p_budgets);
    pos integer[] := array_fill(0, ARRAY[cardinality(p_budgets)]);
    e_ids text[];
    e_amounts double precision[];
    e_windows text[];
    v_soft text[] := ARRAY[]::text[];
    result text[];
    i integer;
    k integer;"""
    + ROWS
    + """BEGIN
    SELECT amount, windows, soft, expires_at INTO h FROM budget_holds WHERE id = p_id;
    IF FOUND THEN
        RETURN ARRAY['hold', h.amount::text, h.windows, h.soft, h.expires_at::text];
    END IF;
    -- holds of the organisation whose process died holding them
    SELECT array_agg(x.id ORDER BY x.expires_at), array_agg(x.amount ORDER BY x.expires_at),
           array_agg(x.windows ORDER BY x.expires_at)
        INTO e_ids, e_amounts, e_windows
        FROM (SELECT id, amount, windows, expires_at FROM budget_holds
              WHERE status = 'held' AND expires_at < p_at AND org_id = p_org
              ORDER BY expires_at LIMIT 100) AS x;
    INSERT INTO budget_usage (budget_id, window_key, spent, reserved)
        SELECT t.b, t.w, 0, 0 FROM unnest(p_budgets, p_windows) AS t(b, w)
        ORDER BY t.b COLLATE "C", t.w COLLATE "C"
        ON CONFLICT DO NOTHING;"""
    + LOCK
    + """
    FOR i IN 1 .. n LOOP
        FOR k IN 1 .. cardinality(ub) LOOP
            IF ub[k] = p_budgets[i] AND uw[k] = p_windows[i] THEN
                pos[i] := k;
                EXIT;
            END IF;
        END LOOP;
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(e_ids), 0) LOOP
        UPDATE budget_holds SET status = 'expired', settled_at = p_at
            WHERE id = e_ids[i] AND status = 'held';
        CONTINUE WHEN NOT FOUND;
        FOR r IN SELECT j.value ->> 0 AS b, j.value ->> 1 AS w
                 FROM jsonb_array_elements(e_windows[i]::jsonb) AS j LOOP
            FOR k IN 1 .. cardinality(ub) LOOP
                IF ub[k] = r.b AND uw[k] = r.w THEN
                    ur[k] := ur[k] - e_amounts[i];
                    dirty[k] := true;
                    EXIT;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    -- every hard budget before holding anything (1e-9: EPSILON of _gate_defs)
    FOR i IN 1 .. n LOOP
        k := pos[i];
        CONTINUE WHEN k = 0  -- its budget was deleted meanwhile
            OR us[k] + ur[k] + p_amount <= p_limits[i] + 1e-9::double precision;
        IF p_hard[i] THEN
            result := ARRAY['over', i::text, us[k]::text, ur[k]::text];
            EXIT;
        END IF;
        v_soft := v_soft || p_budgets[i];
    END LOOP;
    IF result IS NULL THEN
        INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, created_at,
                                  expires_at, run_id)
            VALUES (p_id, p_org, p_amount, p_windows_json, array_to_json(v_soft)::text, 'held',
                    p_at, p_expires, p_run)
            ON CONFLICT DO NOTHING;
        IF FOUND THEN
            FOR i IN 1 .. n LOOP
                k := pos[i];
                CONTINUE WHEN k = 0;
                ur[k] := ur[k] + p_amount;
                dirty[k] := true;
            END LOOP;
            result := ARRAY['ok'] || v_soft;
        END IF;
    END IF;
    IF result IS NULL OR result[1] = 'over' THEN
        -- the same id reserved concurrently: theirs stands
        SELECT amount, windows, soft, expires_at INTO h FROM budget_holds WHERE id = p_id;
        IF FOUND THEN
            result := ARRAY['hold', h.amount::text, h.windows, h.soft, h.expires_at::text];
        ELSIF result IS NULL THEN
            RAISE EXCEPTION 'budget hold % conflicted and vanished', p_id;
        END IF;
    END IF;"""
    + WRITE
    + """    RETURN result;
END
$$"""
)

_COMMIT = (
    """CREATE FUNCTION ef_budget_commit(
    p_id text, p_cost double precision, p_at double precision, p_budgets text[],
    p_windows text[], p_org text, p_amount double precision, p_windows_json text,
    p_soft_json text, p_expires double precision
) RETURNS text[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET extra_float_digits = 1 AS $$
DECLARE
    h record;
    r record;
    e_windows text[];
    held double precision := 0;
    result text[] := ARRAY['ok'];
    i integer;
    k integer;"""
    + ROWS
    + """BEGIN"""
    + LOCK
    + """
    SELECT status, amount INTO h FROM budget_holds WHERE id = p_id FOR UPDATE;
    IF FOUND THEN
        IF h.status IN ('committed', 'released') THEN
            RETURN ARRAY['noop'];
        END IF;
        IF h.status = 'held' THEN
            held := h.amount;
        END IF;
        UPDATE budget_holds SET status = 'committed', cost = p_cost, settled_at = p_at
            WHERE id = p_id;
    ELSE
        -- a hold this store never saw (its row lost): record the charge rather than lose it
        INSERT INTO budget_holds (id, org_id, amount, windows, soft, status, cost, created_at,
                                  expires_at, settled_at)
            VALUES (p_id, p_org, p_amount, p_windows_json, p_soft_json, 'committed', p_cost,
                    p_at, p_expires, p_at)
            ON CONFLICT DO NOTHING;
    END IF;
    FOR i IN 1 .. cardinality(p_budgets) LOOP
        FOR k IN 1 .. cardinality(ub) LOOP
            IF ub[k] = p_budgets[i] AND uw[k] = p_windows[i] THEN
                result := result || ARRAY[ub[k], uw[k], us[k]::text, (us[k] + p_cost)::text];
                us[k] := us[k] + p_cost;
                ur[k] := ur[k] - held;
                dirty[k] := true;
                EXIT;
            END IF;
        END LOOP;
    END LOOP;"""
    + WRITE
    + """    RETURN result;
END
$$"""
)

_RELEASE = """CREATE FUNCTION ef_budget_release(
    p_id text, p_at double precision, p_budgets text[], p_windows text[]
) RETURNS boolean LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET extra_float_digits = 1 AS $$
DECLARE
    h record;
BEGIN
    PERFORM 1 FROM budget_usage AS u
        WHERE (u.budget_id, u.window_key) IN (
            SELECT t.b, t.w FROM unnest(p_budgets, p_windows) AS t(b, w))
        ORDER BY u.budget_id COLLATE "C", u.window_key COLLATE "C"
        FOR UPDATE OF u;
    SELECT status, amount INTO h FROM budget_holds WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR h.status <> 'held' THEN
        RETURN false;
    END IF;
    UPDATE budget_usage AS u
        SET spent = round(u.spent::text::numeric, 12)::double precision,
            reserved = greatest(0, round((u.reserved - h.amount)::text::numeric, 12))
                ::double precision
        WHERE (u.budget_id, u.window_key) IN (
            SELECT t.b, t.w FROM unnest(p_budgets, p_windows) AS t(b, w));
    UPDATE budget_holds SET status = 'released', cost = NULL, settled_at = p_at
        WHERE id = p_id;
    RETURN true;
END
$$"""

STATEMENTS = (_RESERVE, _COMMIT, _RELEASE)
