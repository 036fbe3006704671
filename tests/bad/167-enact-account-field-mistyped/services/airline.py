#!/bin/sh
# a package of the bad-input corpus: never run
