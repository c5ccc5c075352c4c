module imagestreams.local/images

go 1.24
