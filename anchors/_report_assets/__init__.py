"""Script and style that anchors._report inlines into report.html."""
