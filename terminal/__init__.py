"""The clerk's and the manager's screens behind cli.py: the menu, the views, the dashboard and the live watch."""
