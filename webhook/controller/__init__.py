"""The controller process: reconciling ImageStreams, imports, triggers, policy labels."""
