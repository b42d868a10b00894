"""Management: the HTTP JSON API and the MSA-style command language behind `ctl`."""
