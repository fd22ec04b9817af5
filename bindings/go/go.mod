module github.com/deltacome/deltacome-go

go 1.19
