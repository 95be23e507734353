"""From a signing public key per policy to one signing key pair per server.

A policy that had a signing public key now has Sign ticked, and each key a
policy had is recorded as one of this server's keys, so the backups it
signed keep verifying (the policy's column is left in place, unused).
"""

from odoo import SUPERUSER_ID, api


def migrate(cr, version):
    cr.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'spp_backup_policy' "
        "AND column_name = 'signing_public_key'"
    )
    if not cr.fetchone():
        return
    cr.execute(
        "UPDATE spp_backup_policy SET sign = (coalesce(btrim(signing_public_key), '') <> '') "
        "RETURNING name, btrim(signing_public_key)"
    )
    env = api.Environment(cr, SUPERUSER_ID, {})
    Keys = env["spp.backup.signing.key"]
    for name, key in cr.fetchall():
        if key:
            Keys._remember(key, "the signing public key of policy %s before one key pair served the server" % name)
