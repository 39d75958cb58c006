"""OCI images made straight from Nix closures.

`layers` writes deterministic layer tarballs, `grouping` decides which store paths share a
layer, `cache` keeps finished layers by store path, `layout` writes OCI layouts and docker
archives, `source` reads existing images, and `image` ties them together for `dynix image`.
"""
