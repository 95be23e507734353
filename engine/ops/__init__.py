"""The operations: backup, verify, restore, drill, prune, Odoo zip import and export, and their shared checks."""
