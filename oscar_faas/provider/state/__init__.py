"""What the provider keeps: deployments and secrets in the data dir (:mod:`.store`), and the
faas-provider payloads they are made of, with Go's JSON rules (:mod:`.types`)."""
