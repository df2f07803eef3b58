"""m004_run_notify: on PostgreSQL, a trigger notifies workers when a run becomes runnable.

Whatever makes a ``runs`` row ``queued`` and due — a submission, an approval decision, a child
run ending (its parent wakes), a park without a timer — calls ``pg_notify`` on the channel
``elevenfactor_runs`` with the run's queue as payload. The notification leaves with the commit
of the transaction that made the run runnable (none if it rolls back), costs no extra round
trip, and identical notifications of one transaction are folded into one. Workers LISTEN and
claim at once (see ``elevenfactor.store._notify``); SQLite has no equivalent and keeps polling.
"""

DIALECTS = ("postgresql",)

STATEMENTS = (
    """CREATE FUNCTION elevenfactor_notify_runnable() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('elevenfactor_runs', NEW.queue);
        RETURN NULL;
    END
    $$""",
    """CREATE TRIGGER runs_notify_runnable
    AFTER INSERT OR UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (NEW.status = 'queued'
        AND (NEW.wake_at IS NULL OR NEW.wake_at <= extract(epoch FROM clock_timestamp())))
    EXECUTE FUNCTION elevenfactor_notify_runnable()""",
)
