"""The clerk's counter as a Textual app: the catalogue with live availability, the order form checked as it is
typed, the hold and its payment, finding a reservation by code, the waitlist, admin and status.

Each screen is a room of its own; `counter` holds the app that moves between them, `calls` runs every call to the
box office off the UI thread, `live` brings what the servers push onto it, `i18n` holds every word the clerk
reads (in locale/, one .po catalogue per language) and `web` serves the same app to a browser.
"""
