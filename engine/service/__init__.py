"""The service: the run protocol shared with Odoo, plan dispatch, the worker loop and the spp-backup command."""
