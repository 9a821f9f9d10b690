"""
Links from the pages to files outside C{docs/} (C{../README.md#quick-start},
C{../../bench/README.md}), written so that they work where people read the
Markdown, on GitHub: here each goes to the page that includes that file
(C{rpisensor_included_files} in C{conf.py}), anchor and all, so that MyST
checks it as it checks every other link. A link to an outside file that no
page includes stays a warning (an error with C{-W}).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["setup"]


def _transform():
    from sphinx import addnodes
    from sphinx.transforms.post_transforms import SphinxPostTransform

    class OutsideLinks(SphinxPostTransform):
        default_priority = 8  # before MyST resolves its links (9)

        def run(self, **kwargs) -> None:
            srcdir = Path(self.env.srcdir)
            root = srcdir.parent
            included = self.config.rpisensor_included_files
            for node in self.document.findall(addnodes.pending_xref):
                if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
                    continue
                target = node["reftarget"]
                if target in self.env.all_docs:
                    continue
                path = (srcdir / f"{target}.md").resolve()
                try:
                    outside = path.relative_to(root).as_posix()
                except ValueError:
                    continue
                if outside in included:
                    node["reftarget"] = included[outside]

    return OutsideLinks


def setup(app):
    app.add_config_value("rpisensor_included_files", {}, "env")
    app.add_post_transform(_transform())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
