"""The main job (`compass demo`): a real multilingual query stream whose topics shift, through the whole loop."""
