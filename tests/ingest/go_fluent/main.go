// A stand-in for Docker's fluentd log driver: the same client library (fluent-logger-golang,
// from Debian's golang-github-fluent-fluent-logger-golang-dev), the same record shape
// (container_id, container_name, source, log) and the driver's options
// fluentd-request-ack=true and fluentd-sub-second-precision=true. Usage: dockerlike PORT TAG
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

func main() {
	port, _ := strconv.Atoi(os.Args[1])
	tag := os.Args[2]
	logger, err := fluent.New(fluent.Config{FluentHost: "127.0.0.1", FluentPort: port, RequestAck: true, SubSecondPrecision: true, Timeout: 30 * time.Second, WriteTimeout: 30 * time.Second, MaxRetry: 3})
	if err != nil {
		fmt.Println("connect:", err)
		os.Exit(1)
	}
	for i, line := range []string{"GET /index.html 200", "upstream timed out"} {
		rec := map[string]string{"container_id": "4f2c1d8e9a7b", "container_name": "/web", "source": []string{"stdout", "stderr"}[i], "log": line}
		if err := logger.PostWithTime(tag, time.Now(), rec); err != nil {
			fmt.Println("post:", err)
			os.Exit(1)
		}
	}
	logger.Close()
	fmt.Println("ok")
}
