"""`dynix serve`: runs Dynamo's serving stack (control plane and graph) under supervision."""
