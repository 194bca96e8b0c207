"""デモ: one provider, its team and three customers modelled on the seeds' case studies."""
