"""mirrormount: mirror each guest's mount tree on the host with shared subtrees."""
__version__ = "0.1.0"
