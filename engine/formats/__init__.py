"""What a backup set holds on a destination: the catalog of sets, the filestore archive and the pack store."""
