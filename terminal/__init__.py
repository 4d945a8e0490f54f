"""The clerk's and the manager's screens behind cli.py: what is typed (inputs), the settings (config), the
answers (views, widgets), the console that prompts (console, for the tour), the counter app (app/), the
dashboard and the live watch."""
