-- Peers marked tls get TLS on the associations Strata opens to them (C-MOVE destinations).
ALTER TABLE ae_peer ADD COLUMN tls INTEGER NOT NULL DEFAULT 0;
