"""The status page's files (index.html, page.css, page.js), served by :mod:`hacluster.node.web`.

Rules: plain HTML, CSS and one script, with no build step and nothing fetched
from anywhere but the node that serves them (pools often have no way out).
The script polls that node's ``/status`` and ``/pool`` and redraws.
"""
