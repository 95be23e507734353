"""From a signing public key per policy to one signing key pair per server.

A policy that had a signing public key now has Sign ticked. The keys the
policies held are not carried over as trusted: a Backup Manager could type
any key there, so only the key in the file odoo.conf names (which the old
code required to match) is trusted from now on; a backup signed with
another key fails verification and says which key it needs (verify_key in
odoo.conf can name it). The policy's column is left in place, unused.
"""


def migrate(cr, version):
    cr.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'spp_backup_policy' "
        "AND column_name = 'signing_public_key'"
    )
    if cr.fetchone():
        cr.execute("UPDATE spp_backup_policy SET sign = (coalesce(btrim(signing_public_key), '') <> '')")
