"""The webhook process: the Flask app under gunicorn, admission, validation and the
watch-fed indexes it answers from."""
