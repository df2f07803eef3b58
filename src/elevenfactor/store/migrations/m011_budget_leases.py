"""m011_budget_leases: on PostgreSQL, the charge of calls served from a budget lease.

A lease is an ordinary hold (``ef_budget_reserve``) that a gateway process takes ahead for its
next calls (``elevenfactor.governance._leases``). ``ef_budget_charge_lease`` charges what calls
served from it cost, in one transaction: every window's spend grows by the cost, and the lease's
held amount (and the windows' reserved amount) shrinks by as much, never below zero. A lease
that is no longer held (given back, or expired) only charges the spend: its amount was already
released. Returns ``ok`` then ``budget_id, window_key, spent before, spent after`` for each
window charged, for the alert thresholds. Usage rows are locked before the lease's row, in the
same fixed order as the other budget functions (see m010_budget_functions).

Bodies avoid question marks and apostrophes (see m010_budget_functions).
"""

from __future__ import annotations

from elevenfactor.store.migrations.m010_budget_functions import LOCK, ROWS, WRITE

DIALECTS = ("postgresql",)

_CHARGE = (
    """CREATE FUNCTION ef_budget_charge_lease(
    p_id text, p_cost double precision, p_budgets text[], p_windows text[]
) RETURNS text[] LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET extra_float_digits = 1 AS $$
DECLARE
    h record;
    r record;
    e_windows text[];
    taken double precision := 0;
    result text[] := ARRAY['ok'];
    i integer;
    k integer;"""
    + ROWS
    + """BEGIN"""
    + LOCK
    + """
    SELECT status, amount INTO h FROM budget_holds WHERE id = p_id FOR UPDATE;
    IF FOUND AND h.status = 'held' THEN
        taken := least(p_cost, h.amount);
        UPDATE budget_holds SET amount = h.amount - taken WHERE id = p_id;
    END IF;
    FOR i IN 1 .. cardinality(p_budgets) LOOP
        FOR k IN 1 .. cardinality(ub) LOOP
            IF ub[k] = p_budgets[i] AND uw[k] = p_windows[i] THEN
                result := result || ARRAY[ub[k], uw[k], us[k]::text, (us[k] + p_cost)::text];
                us[k] := us[k] + p_cost;
                ur[k] := ur[k] - taken;
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

STATEMENTS = (_CHARGE,)
