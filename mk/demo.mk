.PHONY: demo
demo: ## the whole job end to end on the local stand-in (README's first command)
	bash scripts/demo.sh
