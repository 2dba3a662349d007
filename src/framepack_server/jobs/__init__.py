"""Jobs: the job table is the queue (claim, lease, heartbeat, requeue, cancel), API keys and uploads.

``tables`` holds the SQLAlchemy models, ``db`` the engine, sessions and migrations, ``store`` the job
queue, ``keys`` the API keys and ``uploads`` the upload records.
"""
