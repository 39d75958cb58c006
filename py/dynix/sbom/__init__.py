"""Software bills of materials and provenance for Nix closures and the images made of them.

`closure` asks Nix what a closure holds (store paths, references, derivations, licences);
`pedigree` links the closure to the pins file and the patch series (which upstream source
and which patches each package was built from); `cyclonedx` and `spdx` write the documents;
`provenance` writes an in-toto statement with an SLSA provenance predicate; `artifacts` keeps
them beside an image (OCI 1.1 artifacts whose subject is the image manifest).
"""
