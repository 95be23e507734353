"""Schedules get a time zone, a weekday and an anchor day.

The columns are made here, before the module loads, so that the ORM does not
fill them with the defaults meant for new policies (the time zone of the user
running the upgrade): existing policies keep the instants they ran at.

- time zone UTC: the time of day was UTC, and stays so;
- weekday and anchor day from the next run (else the creation date), in UTC:
  weekly and every-N-days schedules keep falling on the same days.
"""

from odoo.tools.sql import column_exists, create_column, table_exists

TABLE = "spp_backup_policy"


def migrate(cr, version):
    if not table_exists(cr, TABLE):
        return
    if not column_exists(cr, TABLE, "tz"):
        create_column(cr, TABLE, "tz", "varchar")
        cr.execute("UPDATE spp_backup_policy SET tz = 'UTC'")
    if not column_exists(cr, TABLE, "weekday"):
        create_column(cr, TABLE, "weekday", "varchar")
        cr.execute(
            "UPDATE spp_backup_policy "
            "SET weekday = (EXTRACT(ISODOW FROM COALESCE(next_run, create_date))::int - 1)::text"
        )
    if not column_exists(cr, TABLE, "schedule_anchor"):
        create_column(cr, TABLE, "schedule_anchor", "date")
        cr.execute("UPDATE spp_backup_policy SET schedule_anchor = COALESCE(next_run, create_date)::date")
