"""SQL that real Odoo and OpenSPP modules run, for the tests of what an import accepts."""

# What OCA queue_job's install hook runs (queue_job 16.0 and 17.0, hooks.py; OpenSPP 1.x installs it), with the
# names qualified, since pg_dump's script runs with an empty search_path.
QUEUE_JOB = """
CREATE TABLE public.queue_job (id serial PRIMARY KEY, uuid varchar NOT NULL, state varchar NOT NULL);
CREATE OR REPLACE
    FUNCTION public.queue_job_notify() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state != 'done' THEN
            PERFORM pg_notify('queue_job', OLD.uuid);
        END IF;
    ELSE
        PERFORM pg_notify('queue_job', NEW.uuid);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER queue_job_notify
    AFTER INSERT OR UPDATE OR DELETE
    ON public.queue_job
    FOR EACH ROW EXECUTE PROCEDURE public.queue_job_notify();
"""
