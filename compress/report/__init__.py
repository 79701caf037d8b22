"""What a run reports: the rows and tables, the files (JSON, CSV, Markdown, HTML, plots), model cards, the trackers'
final figures and the published anchors.
"""
