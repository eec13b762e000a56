"""The responder's training ground: a gymnasium environment of a city under a campaign
(atlas.sim.respond.env), scripted defenders scored on the same episodes
(atlas.sim.respond.defenders) and their table (atlas.sim.respond.score)."""
