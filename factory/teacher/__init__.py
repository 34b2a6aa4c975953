"""Teacher CoT generation: backends, request runner, response cache, prompts, parsing, the stage."""
